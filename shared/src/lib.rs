//! claude-runner's core: the domain (no I/O), the use cases written against ports, and the
//! adapters that implement those ports on AWS and Postgres. Function crates only translate
//! events to use-case calls.

pub mod adapters;
pub mod claude;
pub mod config;
pub mod domain;
mod error;
pub mod ports;
pub mod telemetry;
pub mod usecases;

pub use error::{Error, ErrorKind, Result};
