//! A tenant's limits: how fast it may submit runs and how many it may have queued or running at
//! once. A key's owner is the tenant; the deployment sets the defaults and a key may carry its own.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A token bucket: `burst` tokens at most, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// Tokens when full: how many may be taken at once after a quiet spell.
    pub burst: u32,
    /// Tokens added per minute.
    pub per_minute: u32,
}

/// A bucket's level when it was last taken from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketLevel {
    /// Tokens left then.
    pub tokens: f64,
    /// When.
    pub at: DateTime<Utc>,
}

impl TokenBucket {
    /// Takes one token at `now` from a bucket last at `level` (full when `None`): the new level,
    /// or, when it is empty, the seconds until a token is there.
    pub fn take(&self, level: Option<BucketLevel>, now: DateTime<Utc>) -> Result<BucketLevel, u64> {
        let burst = f64::from(self.burst);
        let per_second = f64::from(self.per_minute) / 60.0;
        let tokens = match level {
            None => burst,
            Some(level) => {
                let elapsed = (now - level.at).num_milliseconds().max(0) as f64 / 1000.0;
                (level.tokens + elapsed * per_second).min(burst)
            }
        };
        if tokens >= 1.0 {
            return Ok(BucketLevel { tokens: tokens - 1.0, at: now });
        }
        // A bucket that never refills is empty for good: say a minute, the caller may retry.
        let wait = if per_second > 0.0 { ((1.0 - tokens) / per_second).ceil() as u64 } else { 60 };
        Err(wait.max(1))
    }
}

/// What one tenant may do.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantLimits {
    /// Run submissions.
    pub submits: TokenBucket,
    /// Runs queued, preparing or running at once.
    pub max_active_runs: u32,
    /// WebSocket connections opened.
    pub connects: TokenBucket,
    /// WebSocket connections open at once.
    pub max_connections: u32,
}

impl Default for TenantLimits {
    /// A fresh deployment's: bursts of 50 submits (one a second after that), 100 runs in flight,
    /// bursts of 50 connections, 200 open at once.
    fn default() -> Self {
        Self {
            submits: TokenBucket { burst: 50, per_minute: 60 },
            max_active_runs: 100,
            connects: TokenBucket { burst: 50, per_minute: 120 },
            max_connections: 200,
        }
    }
}

/// A key's own limits, each replacing the deployment's where set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitOverrides {
    /// `submits.burst`.
    pub submit_burst: Option<u32>,
    /// `submits.per_minute`.
    pub submits_per_minute: Option<u32>,
    /// `max_active_runs`.
    pub max_active_runs: Option<u32>,
    /// `connects.burst`.
    pub connect_burst: Option<u32>,
    /// `connects.per_minute`.
    pub connects_per_minute: Option<u32>,
    /// `max_connections`.
    pub max_connections: Option<u32>,
}

impl TenantLimits {
    /// These limits with a key's own where it has them.
    pub fn with(self, own: &LimitOverrides) -> Self {
        Self {
            submits: TokenBucket {
                burst: own.submit_burst.unwrap_or(self.submits.burst),
                per_minute: own.submits_per_minute.unwrap_or(self.submits.per_minute),
            },
            max_active_runs: own.max_active_runs.unwrap_or(self.max_active_runs),
            connects: TokenBucket {
                burst: own.connect_burst.unwrap_or(self.connects.burst),
                per_minute: own.connects_per_minute.unwrap_or(self.connects.per_minute),
            },
            max_connections: own.max_connections.unwrap_or(self.max_connections),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_token_per_refill_interval() {
        let bucket = TokenBucket { burst: 3, per_minute: 60 };
        let start = Utc::now();
        let mut level = None;
        for _ in 0..3 {
            level = Some(bucket.take(level, start).expect("within the burst"));
        }
        assert_eq!(bucket.take(level, start), Err(1), "empty: a token comes back within a second");
        let later = bucket.take(level, start + Duration::milliseconds(1500)).expect("refilled");
        assert!((later.tokens - 0.5).abs() < 1e-9, "{later:?}");
    }

    #[test]
    fn a_quiet_bucket_refills_only_up_to_its_burst() {
        let bucket = TokenBucket { burst: 2, per_minute: 600 };
        let start = Utc::now();
        let empty = BucketLevel { tokens: 0.0, at: start };
        let level = bucket.take(Some(empty), start + Duration::hours(1)).unwrap();
        assert!((level.tokens - 1.0).abs() < 1e-9, "{level:?}");
    }

    #[test]
    fn a_bucket_without_refill_says_a_minute() {
        let bucket = TokenBucket { burst: 1, per_minute: 0 };
        let level = bucket.take(None, Utc::now()).unwrap();
        assert_eq!(bucket.take(Some(level), Utc::now()), Err(60));
    }

    #[test]
    fn a_keys_own_limits_replace_only_what_they_set() {
        let own = LimitOverrides { max_active_runs: Some(2), submit_burst: Some(5), ..LimitOverrides::default() };
        let limits = TenantLimits::default().with(&own);
        assert_eq!((limits.max_active_runs, limits.submits.burst, limits.submits.per_minute), (2, 5, 60));
        assert_eq!(limits.connects, TenantLimits::default().connects);
    }
}
