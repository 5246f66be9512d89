//! Tenancy: one key's owner cannot starve the others. Submissions go through a token bucket and
//! a cap on runs in flight, WebSocket connections through a bucket of their own; the deployment
//! sets the limits and a key may carry its own.

use std::sync::Arc;

use chrono::Utc;

use crate::domain::{LimitOverrides, Owner, TenantLimits, TokenBucket};
use crate::ports::{BucketStore, ConnectionStore, MetricEvent, Metrics, NoMetrics, RunStore};
use crate::{Error, Result};

/// Attempts at a bucket write that keeps losing to concurrent ones.
const WRITE_ATTEMPTS: u32 = 5;
/// What a caller over its run cap is told to wait: runs take minutes, not seconds.
const QUOTA_RETRY_SECONDS: u64 = 30;

/// Admits or refuses a tenant's submissions and connections.
pub struct Limiter {
    buckets: Arc<dyn BucketStore>,
    runs: Arc<dyn RunStore>,
    defaults: TenantLimits,
    metrics: Arc<dyn Metrics>,
}

impl Limiter {
    /// Limits from `defaults` (a key's own replace them), buckets in `buckets`, runs in flight
    /// counted in `runs`.
    pub fn new(buckets: Arc<dyn BucketStore>, runs: Arc<dyn RunStore>, defaults: TenantLimits) -> Self {
        Self { buckets, runs, defaults, metrics: Arc::new(NoMetrics) }
    }

    /// The same limiter, counting refusals into `metrics`.
    pub fn with_metrics(self, metrics: Arc<dyn Metrics>) -> Self {
        Self { metrics, ..self }
    }

    /// One more run for `owner`: under its cap of runs in flight, and a token from its submit
    /// bucket (a refused run spends none).
    pub async fn admit_run(&self, owner: &Owner, own: &LimitOverrides) -> Result<()> {
        let limits = self.defaults.with(own);
        let cap = limits.max_active_runs as usize;
        let active = self.runs.count_active(owner, cap).await?;
        if active >= cap {
            return Err(self.refuse(
                "quota_exceeded",
                format!("{active} runs are queued or running, the most this key may have; retry when one has ended"),
                QUOTA_RETRY_SECONDS,
            ));
        }
        self.take(&format!("submits#{owner}"), limits.submits, "run submissions").await
    }

    /// One more WebSocket connection for `owner`: refused while it has as many open as it may,
    /// or when its connect bucket is empty.
    pub async fn admit_connection(
        &self,
        owner: &Owner,
        own: &LimitOverrides,
        connections: &dyn ConnectionStore,
    ) -> Result<()> {
        let limits = self.defaults.with(own);
        let cap = limits.max_connections as usize;
        // Counted before the connection is stored: two handshakes at the same moment may both
        // pass, so the cap may be exceeded by the handshakes in flight, never more.
        let open = connections.count_open(owner, cap).await?;
        if open >= cap {
            return Err(self.refuse(
                "quota_exceeded",
                format!("{open} WebSocket connections are open, the most this key may have; close one first"),
                QUOTA_RETRY_SECONDS,
            ));
        }
        self.take(&format!("connects#{owner}"), limits.connects, "connections").await
    }

    async fn take(&self, bucket: &str, limit: TokenBucket, what: &str) -> Result<()> {
        for _ in 0..WRITE_ATTEMPTS {
            let stored = self.buckets.get(bucket).await?;
            match limit.take(stored.map(|s| s.level), Utc::now()) {
                Ok(level) => {
                    if self.buckets.put(bucket, level, stored.map(|s| s.version)).await? {
                        return Ok(());
                    }
                }
                Err(wait) => {
                    let message = format!(
                        "more {what} than this key may make ({} at once, {} a minute); retry in {wait} s",
                        limit.burst, limit.per_minute
                    );
                    return Err(self.refuse("rate_limited", message, wait));
                }
            }
        }
        // Others are taking from the same bucket this very moment: it is busy, so is this caller.
        Err(self.refuse("rate_limited", format!("too many {what} at once; retry in 1 s"), 1))
    }

    fn refuse(&self, code: &'static str, message: String, retry_after: u64) -> Error {
        self.metrics.record(MetricEvent::new().dimension("Limit", code).count("RateLimitRefusals", 1));
        Error::Limited { code, message, retry_after }
    }
}
