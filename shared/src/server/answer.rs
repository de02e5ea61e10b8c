//! The reactor's answer side: what the driver sends for a request (bytes,
//! its end, an error, text and progress) and how answers are encoded.

use super::*;

impl ServerReactor {
    /// Appends bytes to a request's answer (cut into frames of
    /// `answer_chunk_size`).
    pub fn send_answer_data(&mut self, id: RequestId, mut data: Bytes) -> Result<(), ApiMisuse> {
        let chunk = self.config.answer_chunk_size;
        let request = self.answerable(id)?;
        let encode = request.encode;
        let AnswerState::Open { tail } = &mut request.answer else {
            return Err(ApiMisuse::AnswerEnded(id));
        };
        if data.is_empty() {
            return Ok(());
        }
        let mut ready = Vec::new();
        if let Some(previous) = tail.take() {
            if previous.len() < chunk {
                // Top the held chunk up so frames stay full.
                let mut joined = BytesMut::with_capacity(chunk);
                joined.extend_from_slice(&previous);
                let take = (chunk - previous.len()).min(data.len());
                joined.extend_from_slice(&data.split_to(take));
                if data.is_empty() {
                    *tail = Some(joined.freeze());
                    return Ok(());
                }
                ready.push(joined.freeze());
            } else {
                ready.push(previous);
            }
        }
        while data.len() > chunk {
            ready.push(data.split_to(chunk));
        }
        *tail = Some(data);
        for piece in ready {
            self.push(id, bytes_body(piece, false), encode, false);
        }
        Ok(())
    }

    /// From now on, no frame of this message is compressed, and no
    /// compressor is made if none was yet (§5 allows unencoded frames on an
    /// encoded stream: the peer decodes them as they are). Drivers use it
    /// to bound how many compressors — a few MiB each — a server keeps.
    pub fn forgo_compression(&mut self) {
        self.compress = false;
    }

    /// Chooses whether the rest of a request's answer is encoded with the
    /// stream's content encoding (default: yes, while compressing pays on
    /// the stream, [`crate::gain`]). Drivers turn it off for data that does
    /// not compress (§5 allows unencoded frames on an encoded stream),
    /// saving the compressor's time.
    pub fn set_answer_encoding(&mut self, id: RequestId, encode: bool) -> Result<(), ApiMisuse> {
        self.answerable(id)?.encode = if encode { Encode::Auto } else { Encode::No };
        Ok(())
    }

    /// Marks the rest of a request's answer as data that compresses (the
    /// driver sampled it): it is encoded even while the stream's other
    /// payloads did not pay ([`Encode::Always`]).
    pub fn mark_answer_compressible(&mut self, id: RequestId) -> Result<(), ApiMisuse> {
        self.answerable(id)?.encode = Encode::Always;
        Ok(())
    }

    /// Ends a request's answer (the held chunk goes out with `eos`; an empty
    /// answer is one empty `eos` frame). Allowed while its data still
    /// arrives; later data is discarded.
    pub fn finish_answer(&mut self, id: RequestId) -> Result<(), ApiMisuse> {
        let request = self.answerable(id)?;
        let AnswerState::Open { tail } = &mut request.answer else {
            return Err(ApiMisuse::AnswerEnded(id));
        };
        let last = tail.take().unwrap_or_default();
        request.answer = AnswerState::Queued;
        if matches!(request.phase, Phase::Data) {
            // Answered before its data ended: the rest is discarded, and the
            // request leaves once its data ends and its answer went out.
            request.phase = Phase::Discarding;
        }
        let encode = request.encode;
        self.push(id, bytes_body(last, true), encode, true);
        Ok(())
    }

    /// Ends a request's answer with an `application` error. Allowed while its
    /// data still arrives; later data is discarded.
    pub fn fail_command(&mut self, id: RequestId, error: ErrorPayload) -> Result<(), ApiMisuse> {
        let request = self.answerable(id)?;
        if !matches!(request.answer, AnswerState::Open { .. }) {
            return Err(ApiMisuse::AnswerEnded(id));
        }
        request.answer = AnswerState::Queued;
        if matches!(request.phase, Phase::Data) {
            request.phase = Phase::Discarding;
        }
        let body = FrameBody::ErrorResponse(ErrorResponse::new(ErrorKind::Application, &error));
        self.push(id, body, Encode::Auto, true);
        Ok(())
    }

    /// Sends human-readable messages for a request.
    pub fn send_text(&mut self, id: RequestId, atoms: &[TextAtom]) -> Result<(), ApiMisuse> {
        let payload = encode_atoms(atoms)?;
        if payload.len() > self.config.max_frame_size {
            return Err(ApiMisuse::TooLarge(payload.len()));
        }
        self.open_answer(id)?;
        self.push(
            id,
            FrameBody::TextOutput(TextOutput { payload }),
            Encode::Auto,
            false,
        );
        Ok(())
    }

    /// Sends a progress report for a request.
    pub fn send_progress(
        &mut self,
        id: RequestId,
        progress: &ProgressPayload,
    ) -> Result<(), ApiMisuse> {
        let payload = progress.encode();
        if payload.len() > self.config.max_frame_size {
            return Err(ApiMisuse::TooLarge(payload.len()));
        }
        self.open_answer(id)?;
        self.push(
            id,
            FrameBody::Progress(Progress { payload }),
            Encode::Auto,
            false,
        );
        Ok(())
    }
}
