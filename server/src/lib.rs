//! # framegate-server
//!
//! The framegate gateway: an axum service that takes framegate messages
//! (`POST {base}/.framegate/ro|rw`), runs their commands against a served
//! directory, and streams the answers back after the whole request body was
//! read (deferred output, PROTOCOL.md §7). It also serves the same tree as
//! plain files, so clients can fall back to plain HTTP against it too.
//!
//! Embedding: build a [`Registry`] with your own commands (see
//! `examples/custom_command.rs`), a [`GatewayConfig`], then
//! [`Gateway::new`] and [`Gateway::router`] or [`serve()`].

pub mod command;
pub mod files;
pub mod gateway;
pub mod message;
pub mod metrics;
pub mod serve;
pub mod stream;
pub mod tree;

pub use command::{Access, Answer, Call, Command, CommandError, Context, Registry, Upload};
pub use gateway::{Gateway, GatewayConfig};
pub use serve::{ServeHandle, serve};
