//! Argument bytes held by the unanswered requests of one reactor, counted
//! against the per-message limit and, when the server gives one, the
//! server-wide budget (`ServerConfig::max_unanswered_argument_bytes` and
//! `held_argument_budget`). Both refusals are the same protocol error,
//! `too-large`, tied to the request whose argument did not fit.

use crate::budget::{Permit, SharedBudget};
use crate::error::{ErrorCode, ProtocolError};

/// What an argument costs a server beyond its name and value bytes: its
/// entry in the request's vector and the allocations of its name and value.
/// Counted with them, so that 64 one-byte arguments cost what they take
/// (they once counted 2 bytes each and took about 90).
pub const ARGUMENT_OVERHEAD: usize = 96;

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
                     answered, over all its clients, or its memory budget is in use: no \
                     room for {n} more (retry later, or send fewer requests per message)"
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

/// Requests a reactor holds (from their `command-name` frame until their
/// answer went out) beyond the first [`FREE_REQUESTS`], counted against
/// the server-wide budget when the server gives one
/// (`ServerConfig::held_request_budget`). Every held request costs its
/// record, its place in the driver's maps and its deferred call — about
/// 660 bytes — whatever its arguments, and HTTP/2 lets one connection send
/// many messages of 4,096: without this, 320 such messages held 855 MiB.
/// Past the budget, a request is the protocol error `too-many-requests`
/// (the message or session ends); a message never needs the budget for
/// its first [`FREE_REQUESTS`], so small messages always get through.
#[derive(Debug)]
pub(super) struct HeldRequests {
    /// Units of the budget held: `held − FREE_REQUESTS`, at least 0.
    server: Option<(Permit, usize)>,
}

/// Requests a message or session may hold without the server-wide budget.
pub const FREE_REQUESTS: usize = 64;

impl HeldRequests {
    pub(super) fn new(budget: Option<&SharedBudget>) -> Self {
        HeldRequests {
            server: budget.and_then(|b| Some((b.try_take(0)?, b.limit()))),
        }
    }

    /// One more request is about to be held, `held` being held now.
    pub(super) fn admit(&mut self, held: usize) -> Result<(), ProtocolError> {
        if held < FREE_REQUESTS {
            return Ok(());
        }
        if let Some((permit, limit)) = &mut self.server
            && !permit.try_grow(1)
        {
            return Err(ProtocolError::new(
                ErrorCode::TOO_MANY_REQUESTS,
                format!(
                    "the server holds {limit} requests not yet answered, over all its \
                     clients, or its memory budget is in use (retry later, or send fewer \
                     requests per message)"
                ),
            ));
        }
        Ok(())
    }

    /// A request is no longer held, `held` being held now (after it left).
    pub(super) fn left(&mut self, held: usize) {
        if let Some((permit, _)) = &mut self.server {
            let want = held.saturating_sub(FREE_REQUESTS);
            let over = permit.amount().saturating_sub(want);
            permit.give_back(over);
        }
    }
}
