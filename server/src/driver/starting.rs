//! How a command of a message starts: its name looked up, refused when
//! unknown, refused by policy, or a write on a read-only message; run at
//! once when it has data (to stage it), else queued for its turn.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use framegate_wire::{ErrorCode, IncomingCommand, RequestId};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{DATA_CHANNEL_CHUNKS, Driver, Inflight, Start, traced};
use crate::command::{Access, Call, CommandError, Context, Hello, Turn, Upload};
use crate::pool::in_share;

impl Driver {
    pub(super) fn start(&mut self, cmd: IncomingCommand) {
        self.commands += 1;
        let id = cmd.request_id;
        if self.refusing_new {
            let err = CommandError::new(
                ErrorCode::INTERNAL,
                "the server is stopping: request not run (send it again on a new connection)",
            );
            self.fail_now(id, &cmd.name, err);
            return;
        }
        let command = if cmd.name == "hello" {
            Some(
                self.gw
                    .registry
                    .get("hello")
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Hello)),
            )
        } else {
            self.gw.registry.get(&cmd.name).cloned()
        };
        let Some(command) = command else {
            let err = if self.gw.registry.is_refused(&cmd.name) {
                CommandError::new(
                    ErrorCode::COMMAND_REFUSED,
                    format!(
                        "this server does not offer {:?} (its operator's policy)",
                        cmd.name
                    ),
                )
            } else {
                CommandError::new(
                    ErrorCode::UNKNOWN_COMMAND,
                    format!("unknown command {:?}", cmd.name),
                )
            };
            self.fail_now(id, &cmd.name, err);
            return;
        };
        if cmd.name == "hello"
            && self.spec.token_unlocks
            && let (Some(given), Some(token)) =
                (cmd.arguments.get("token"), &self.gw.config.write_token)
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                given.as_ref(),
                token.as_bytes(),
            ))
        {
            self.spec.writable.store(true, Ordering::SeqCst);
        }
        let writable = self.spec.writable.load(Ordering::SeqCst);
        let access = command.access();
        if access == Access::Write && !writable {
            let err = CommandError::new(
                ErrorCode::READ_ONLY,
                format!("{} needs the rw endpoint with writes allowed", cmd.name),
            );
            self.fail_now(id, &cmd.name, err);
            return;
        }
        let ctx = Context {
            request_id: id,
            storage: self.spec.storage.clone(),
            writable,
            notes: self.notes_tx.clone(),
            hello: self.gw.hello.clone(),
            listing_budget: self.gw.listing_budget.clone(),
        };
        let (data_tx, start, task) = if cmd.has_data && command.takes_data() {
            // Started now, so its data can be staged as it arrives; it waits
            // for its turn before it takes effect.
            let (tx, rx) = mpsc::channel(DATA_CHANNEL_CHUNKS);
            let (go_tx, go_rx) = oneshot::channel();
            let call = Call {
                ctx,
                args: cmd.arguments,
                data: Some(Upload::new(rx)),
                turn: Turn::pending(go_rx),
            };
            let span = tracing::debug_span!("command", name = %cmd.name, request = id.0);
            let run = in_share(self.share, traced(command, call));
            let run = self.runs.spawn(run.instrument(span));
            self.run_ids.insert(run, id);
            (Some(tx), Start::Waiting(go_tx), Some(run))
        } else {
            let call = Call {
                ctx,
                args: cmd.arguments,
                data: None,
                turn: Turn::granted(),
            };
            (None, Start::Later(Box::new((command, call))), None)
        };
        self.inflight.insert(
            id,
            Inflight {
                name: cmd.name,
                access,
                data_tx,
                start,
                complete: false,
                run: task,
            },
        );
    }

    pub(super) fn fail_now(&mut self, id: RequestId, name: &str, err: CommandError) {
        self.count(name, Some(&err.code));
        let _ = self.reactor.fail_command(id, err.into());
    }

    pub(super) fn count(&self, name: &str, error: Option<&ErrorCode>) {
        let outcome = error.map_or("ok", |c| c.as_str());
        // Unknown names are one label, so clients cannot grow the series.
        let name = if self.gw.registry.get(name).is_some()
            || self.gw.registry.is_refused(name)
            || name == "hello"
        {
            name
        } else {
            "unknown"
        };
        self.gw
            .metrics
            .commands
            .with_label_values(&[name, outcome])
            .inc();
    }
}
