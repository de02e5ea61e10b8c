//! The reactor's input side: a request's name, arguments and data as
//! they arrive, and the protocol errors that end a request or the whole
//! stream.

use super::*;

impl ServerReactor {
    pub(super) fn on_command_name(
        &mut self,
        id: RequestId,
        body: CommandName,
    ) -> Result<(), Failure> {
        if id == RequestId::CONNECTION {
            return Err((
                None,
                proto(
                    ErrorCode::REQUEST_ID_IN_USE,
                    "request id 0 is the connection's",
                ),
            ));
        }
        if self.requests.contains_key(&id) {
            return Err((
                None,
                proto(
                    ErrorCode::REQUEST_ID_IN_USE,
                    format!("request id {id} is already active"),
                ),
            ));
        }
        body.check_flags().map_err(|e| (Some(id), e))?;
        let name = body.name().map_err(|e| (Some(id), e))?.to_string();
        if self.receiving >= self.config.max_receiving_requests {
            return Err((
                Some(id),
                proto(
                    ErrorCode::TOO_MANY_REQUESTS,
                    format!(
                        "more than {} requests receiving at once",
                        self.config.max_receiving_requests
                    ),
                ),
            ));
        }
        if self.mode == OutputMode::Deferred
            && self.arrivals >= self.config.max_requests_per_message as u64
        {
            return Err((
                Some(id),
                proto(
                    ErrorCode::TOO_MANY_REQUESTS,
                    format!(
                        "more than {} requests in one message",
                        self.config.max_requests_per_message
                    ),
                ),
            ));
        }
        self.held_requests
            .admit(self.requests.len())
            .map_err(|e| (Some(id), e))?;
        let arrival = self.arrivals;
        self.arrivals += 1;
        let flags = body.flags;
        let has_data = flags.contains(CommandNameFlags::HAVE_DATA);
        let phase = if flags.contains(CommandNameFlags::HAVE_ARGS) {
            Phase::Arguments(Box::new(ArgumentState {
                name,
                has_data,
                args: Arguments::new(),
                partial: None,
                bytes: 0,
            }))
        } else {
            self.events.push_back(ServerEvent::Command(IncomingCommand {
                request_id: id,
                name,
                arguments: Arguments::new(),
                has_data,
            }));
            if has_data {
                Phase::Data
            } else {
                Phase::Complete
            }
        };
        let complete = matches!(phase, Phase::Complete);
        self.requests.insert(
            id,
            Request {
                arrival,
                phase,
                answer: AnswerState::Open { tail: None },
                encode: Encode::Auto,
                arg_bytes: 0,
            },
        );
        if complete {
            self.complete(id);
        } else {
            self.receiving += 1;
        }
        Ok(())
    }

    pub(super) fn on_argument(
        &mut self,
        id: RequestId,
        body: CommandArgument,
    ) -> Result<(), Failure> {
        let config = &self.config;
        let request = self.requests.get_mut(&id);
        let Some(Request {
            phase: Phase::Arguments(state),
            arg_bytes,
            ..
        }) = request
        else {
            let tied = request.filter(|r| r.is_receiving()).map(|_| id);
            return Err((
                tied,
                proto(
                    ErrorCode::BAD_ARGUMENT_FRAME,
                    format!("unexpected argument frame for request {id}"),
                ),
            ));
        };
        let tie = |e: ProtocolError| (Some(id), e);
        let continuation = body.flags.contains(CommandArgumentFlags::CONTINUATION);
        let bad = |why: &str| {
            (
                Some(id),
                proto(ErrorCode::BAD_ARGUMENT_FRAME, why.to_string()),
            )
        };
        let (mut partial, part) = match state.partial.take() {
            Some(partial) => {
                let part = body.payload;
                (partial, part)
            }
            None => {
                let start = body.parse_start().map_err(tie)?;
                if state.args.contains(&start.name) {
                    return Err(tie(proto(
                        ErrorCode::DUPLICATE_ARGUMENT,
                        format!("argument {:?} given twice", start.name),
                    )));
                }
                if state.args.len() >= config.max_arguments {
                    return Err(tie(proto(
                        ErrorCode::TOO_MANY_ARGUMENTS,
                        format!("more than {} arguments", config.max_arguments),
                    )));
                }
                let size = start.name.len() + start.value_len;
                state.bytes += size;
                if state.bytes > config.max_argument_bytes {
                    return Err(tie(proto(
                        ErrorCode::TOO_LARGE,
                        format!("arguments exceed {} bytes", config.max_argument_bytes),
                    )));
                }
                // Held as it arrives: a value declared long and never sent
                // holds nothing (64 such requests of 16 sessions once held
                // the server-wide budget for 300 s with 28 KB of input).
                let cost = start.name.len() + ARGUMENT_OVERHEAD;
                self.held_args.hold(cost).map_err(tie)?;
                *arg_bytes += cost;
                let partial = PartialArgument {
                    name: start.name,
                    value: BytesMut::with_capacity(start.value_part.len()),
                    want: start.value_len,
                };
                (partial, start.value_part)
            }
        };
        if partial.value.len() + part.len() > partial.want {
            return Err(bad("argument value longer than its declared length"));
        }
        self.held_args.hold(part.len()).map_err(tie)?;
        *arg_bytes += part.len();
        partial.value.extend_from_slice(&part);
        let whole = partial.value.len() == partial.want;
        match (whole, continuation) {
            (true, true) => {
                return Err(bad(
                    "continuation set on the frame that completes the value",
                ));
            }
            (false, false) => return Err(bad("argument value ends before its declared length")),
            (false, true) => {
                if body.flags.contains(CommandArgumentFlags::EOA) {
                    return Err(bad("eoa set while an argument value continues"));
                }
                state.partial = Some(partial);
                return Ok(());
            }
            (true, false) => state
                .args
                .insert_received(partial.name, partial.value.freeze()),
        }
        if !body.flags.contains(CommandArgumentFlags::EOA) {
            return Ok(());
        }
        let has_data = state.has_data;
        let command = IncomingCommand {
            request_id: id,
            name: std::mem::take(&mut state.name),
            arguments: std::mem::take(&mut state.args),
            has_data,
        };
        self.events.push_back(ServerEvent::Command(command));
        if has_data {
            if let Some(request) = self.requests.get_mut(&id) {
                request.phase = Phase::Data;
            }
        } else {
            self.receiving -= 1;
            self.complete(id);
        }
        Ok(())
    }

    pub(super) fn on_data(&mut self, id: RequestId, body: CommandData) -> Result<(), Failure> {
        let request = self.requests.get_mut(&id);
        let discarding = match request.as_ref().map(|r| &r.phase) {
            Some(Phase::Data) => false,
            Some(Phase::Discarding) => true,
            Some(Phase::Arguments(_)) => {
                return Err((
                    Some(id),
                    proto(ErrorCode::BAD_FRAME_TYPE, "command-data before eoa"),
                ));
            }
            Some(Phase::Complete) | None => {
                return Err((
                    None,
                    proto(
                        ErrorCode::BAD_FRAME_TYPE,
                        format!("unexpected command-data for request {id}"),
                    ),
                ));
            }
        };
        let last = body.is_last().map_err(|e| (Some(id), e))?;
        if !discarding && !body.payload.is_empty() {
            self.events.push_back(ServerEvent::Data {
                request_id: id,
                data: body.payload,
            });
        }
        if last {
            self.receiving -= 1;
            if discarding {
                if let Some(request) = self.requests.get_mut(&id) {
                    request.phase = Phase::Complete;
                }
                self.remove_if_finished(id);
            } else {
                self.complete(id);
            }
        }
        Ok(())
    }

    pub(super) fn complete(&mut self, id: RequestId) {
        if let Some(request) = self.requests.get_mut(&id) {
            request.phase = Phase::Complete;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.push_back(ServerEvent::Complete {
            request_id: id,
            seq,
        });
    }

    /// Records a protocol error: answers it (on the tied request, or on id 0),
    /// cuts off other receiving requests and errors the reactor.
    pub(super) fn enter_errored(
        &mut self,
        tied: Option<RequestId>,
        err: ProtocolError,
    ) -> ProtocolError {
        tracing::debug!(code = %err.code, message = %err.message, "protocol error");
        if let Some(id) = tied {
            match self.requests.get_mut(&id) {
                // Already answered (failed while its data arrived): the error
                // goes to the connection instead of a second answer.
                Some(request) if !matches!(request.answer, AnswerState::Open { .. }) => {
                    if request.is_receiving() {
                        self.receiving -= 1;
                    }
                    request.phase = Phase::Complete;
                    self.remove_if_finished(id);
                    self.push(
                        RequestId::CONNECTION,
                        protocol_body(&err),
                        Encode::Auto,
                        false,
                    );
                }
                Some(request) => {
                    if request.is_receiving() {
                        self.receiving -= 1;
                    }
                    if request.is_started() && !matches!(request.phase, Phase::Discarding) {
                        self.events.push_back(ServerEvent::Aborted {
                            request_id: id,
                            error: err.clone(),
                        });
                    }
                    request.phase = Phase::Complete;
                    request.answer = AnswerState::Queued;
                    self.push(id, protocol_body(&err), Encode::Auto, true);
                }
                // A request that never became active (refused command-name).
                None => self.push(id, protocol_body(&err), Encode::Auto, false),
            }
        } else {
            self.push(
                RequestId::CONNECTION,
                protocol_body(&err),
                Encode::Auto,
                false,
            );
        }
        self.errored = true;
        self.inbound.close_all();
        self.abort_receiving(
            ErrorCode::SERVER_ERRORED,
            "request cut off: the server stopped reading after a protocol error",
            tied,
        );
        self.events
            .push_back(ServerEvent::ProtocolError(err.clone()));
        err
    }

    /// Answers every request still receiving with `code`, oldest first.
    pub(super) fn abort_receiving(
        &mut self,
        code: ErrorCode,
        message: &str,
        except: Option<RequestId>,
    ) {
        let mut cut: Vec<(u64, RequestId)> = self
            .requests
            .iter()
            .filter(|(id, r)| r.is_receiving() && Some(**id) != except)
            .map(|(id, r)| (r.arrival, *id))
            .collect();
        cut.sort_unstable();
        for (_, id) in cut {
            let err = ProtocolError::new(code.clone(), format!("{message} {id}"));
            let Some(request) = self.requests.get_mut(&id) else {
                continue;
            };
            self.receiving -= 1;
            let discarding = matches!(request.phase, Phase::Discarding);
            if request.is_started() && !discarding {
                self.events.push_back(ServerEvent::Aborted {
                    request_id: id,
                    error: err.clone(),
                });
            }
            request.phase = Phase::Complete;
            if discarding {
                // Its error answer is already queued.
                self.remove_if_finished(id);
                continue;
            }
            request.answer = AnswerState::Queued;
            self.push(id, protocol_body(&err), Encode::Auto, true);
        }
    }
}
