//! End-to-end tests: the real HTTP server, moto, Postgres and git. One test binary on purpose
//! (each extra one links the AWS SDK again).

mod api;
mod custom_workflows;
mod epics;
mod errors;
mod executor;
mod executor_promises;
mod faults;
mod genie;
mod long_runs;
mod memory;
mod model_protocol;
mod operability;
mod projector;
mod promises;
mod readme;
mod sandbox;
mod sessions;
mod storage;
mod streaming;
mod tenancy;
mod workspaces;
