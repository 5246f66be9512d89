//! claude-runner's core: the domain (types and rules), what it knows of the Claude CLI's
//! protocol, the ports (traits for everything outside) and the use cases written against them.
//!
//! This crate does no I/O of its own: no AWS SDK, no sqlx, no file system, no processes
//! (`cargo xtask tidy` holds that). Adapters live in `runner-adapters`; function crates wire
//! the two together and translate events into use-case calls.

#![warn(missing_docs)]

pub mod claude;
pub mod domain;
mod error;
pub mod ports;
pub mod usecases;

pub use error::{Error, ErrorKind, Result};
