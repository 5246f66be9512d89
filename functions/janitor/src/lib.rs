//! The janitor function: EventBridge schedules → `Janitor::sweep` (every 15 minutes), and the
//! connections of revoked keys closed (every minute, `{"sweep": "connections"}`).

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

/// What a schedule's event asks for: the connections sweep, or the whole one.
pub async fn handle_event(janitor: &Janitor, event: &serde_json::Value) -> runner_core::Result<JanitorReport> {
    match event["sweep"].as_str() {
        Some("connections") => {
            Ok(JanitorReport { revoked_connections: janitor.close_revoked().await?, ..JanitorReport::default() })
        }
        _ => handle(janitor).await,
    }
}
