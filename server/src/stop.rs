//! How a graceful stop ended: the error both bindings return when the
//! shutdown grace ran out with work still in flight.

use std::fmt;
use std::io;
use std::time::Duration;

/// The shutdown grace period ran out with work in flight, which was cut.
///
/// [`ServeHandle::wait`](crate::ServeHandle::wait) and [`serve_tcp`](crate::serve_tcp) return it inside
/// an [`io::Error`] of kind [`io::ErrorKind::TimedOut`]; find it with
/// `error.get_ref().and_then(|e| e.downcast_ref::<GraceExpired>())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraceExpired {
    /// The grace period that ran out.
    pub grace: Duration,
    /// Connections still open when it ran out (and cut).
    pub connections: usize,
}

impl fmt::Display for GraceExpired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the shutdown grace period ({}) ran out; {} connection(s) with work in flight cut",
            humantime::format_duration(self.grace),
            self.connections
        )
    }
}

impl std::error::Error for GraceExpired {}

impl GraceExpired {
    /// As the [`io::Error`] a server returns.
    pub fn into_io_error(self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, self)
    }

    /// The [`GraceExpired`] inside `error`, if that is what it is.
    pub fn find(error: &io::Error) -> Option<GraceExpired> {
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<GraceExpired>())
            .copied()
    }
}
