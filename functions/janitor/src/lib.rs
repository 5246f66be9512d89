//! The janitor function: an EventBridge schedule → `Janitor::sweep`.

use runner_adapters::Wiring;
use runner_core::usecases::{Janitor, JanitorReport};

/// Items of each kind handled per invocation: a backlog drains over several runs of the schedule.
pub const BATCH: usize = 100;

/// Builds the janitor once per cold start.
pub async fn build(wiring: &Wiring) -> runner_core::Result<Janitor> {
    wiring.janitor_with_memory(BATCH).await
}

/// One sweep, as of now.
pub async fn handle(janitor: &Janitor) -> runner_core::Result<JanitorReport> {
    janitor.sweep(chrono::Utc::now()).await
}
