//! End-to-end tests: the real HTTP server, moto, Postgres and git. One test binary on purpose
//! (each extra one links the AWS SDK again).

mod api;
mod errors;
mod executor;
mod projector;
mod sessions;
mod storage;
mod streaming;
