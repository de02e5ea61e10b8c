//! Argument bytes held by the unanswered requests of one reactor, counted
//! against the per-message limit and, when the server gives one, the
//! server-wide budget (`ServerConfig::max_unanswered_argument_bytes` and
//! `held_argument_budget`). Both refusals are the same protocol error,
//! `too-large`, tied to the request whose argument did not fit.

use crate::budget::{Permit, SharedBudget};
use crate::error::{ErrorCode, ProtocolError};

#[derive(Debug)]
pub(super) struct HeldArguments {
    bytes: usize,
    limit: usize,
    /// Holds `bytes` units of the server-wide budget; dropped with the
    /// reactor, giving them back.
    server: Option<(Permit, usize)>,
}

impl HeldArguments {
    pub(super) fn new(limit: usize, budget: Option<&SharedBudget>) -> Self {
        HeldArguments {
            bytes: 0,
            limit,
            server: budget.and_then(|b| Some((b.try_take(0)?, b.limit()))),
        }
    }

    /// Holds `n` more bytes for a request, or says why not.
    pub(super) fn hold(&mut self, n: usize) -> Result<(), ProtocolError> {
        let total = self.bytes.saturating_add(n);
        if total > self.limit {
            return Err(ProtocolError::new(
                ErrorCode::TOO_LARGE,
                format!(
                    "requests not yet answered hold more than {} bytes of arguments \
                     (send fewer requests per message)",
                    self.limit
                ),
            ));
        }
        if let Some((permit, limit)) = &mut self.server
            && !permit.try_grow(n)
        {
            return Err(ProtocolError::new(
                ErrorCode::TOO_LARGE,
                format!(
                    "the server holds {limit} bytes of arguments of requests not yet \
                     answered, over all its clients: no room for {n} more (retry later, \
                     or send fewer requests per message)"
                ),
            ));
        }
        self.bytes = total;
        Ok(())
    }

    /// A request was answered: the `n` bytes it held are free.
    pub(super) fn release(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        if let Some((permit, _)) = &mut self.server {
            permit.give_back(n);
        }
    }
}
