//! Where a session is in its life (a leaf: errors name it too).

use std::fmt;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Not connected.
    Idle,
    /// Connecting and exchanging the preamble.
    Connecting,
    /// Calls can be made.
    Running,
    /// Closing: outgoing frames drain, the tasks stop.
    Disconnecting,
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunState::Idle => "idle",
            RunState::Connecting => "connecting",
            RunState::Running => "running",
            RunState::Disconnecting => "disconnecting",
        })
    }
}
