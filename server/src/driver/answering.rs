//! Where a command's outcome meets the reactor: an error or an in-memory
//! answer at once, a lazy answer queued to be fed in pieces, an announced
//! answer's progress frame ahead of its first byte, and the notes commands
//! send beside their answers.

use std::sync::Arc;

use framegate_wire::RequestId;
use tokio::sync::OwnedSemaphorePermit;

use super::{Driver, output};
use crate::command::{Answer, CommandError, Note};

impl Driver {
    pub(super) fn answer(
        &mut self,
        id: RequestId,
        result: Result<Answer, CommandError>,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        match result {
            Err(err) => {
                let _ = self.reactor.fail_command(id, err.into());
            }
            Ok(Answer::Bytes(bytes)) => {
                if self.reactor.send_answer_data(id, bytes).is_ok() {
                    let _ = self.reactor.finish_answer(id);
                }
            }
            Ok(Answer::File { file, ranges }) => self.lazy.push(
                id,
                output::Source::File {
                    opened: output::Fingerprint::of(&file),
                    file: Arc::new(file),
                    ranges: ranges.into(),
                    after: None,
                },
                slot,
            ),
            Ok(Answer::Stream(stream)) => {
                self.lazy.push(id, output::Source::Stream(stream), slot);
            }
            Ok(Answer::Announced { progress, answer }) => {
                // Queued now, ahead of every byte of the answer: the
                // reactor sends a request's frames in the order queued, and
                // a lazy answer's bytes are fed only later.
                let _ = self.reactor.send_progress(id, &progress);
                self.answer(id, Ok(*answer), slot);
            }
        }
    }

    pub(super) fn apply_note(&mut self, note: Note) {
        let _ = match note {
            Note::Text(id, atoms) => self.reactor.send_text(id, &atoms),
            Note::Progress(id, progress) => self.reactor.send_progress(id, &progress),
        };
    }
}
