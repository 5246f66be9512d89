//! Which executors may take a run: Lambda's, which stop at 15 minutes, or the long-running
//! workers, for runs whose time limit is above that.

use serde::{Deserialize, Serialize};

/// The longest run a Lambda executor takes: Lambda stops at 900 s, and the run needs time after
/// its CLI to publish and archive.
pub const LAMBDA_RUN_LIMIT_SECONDS: u64 = 840;

/// The queue, and so the executors, a run goes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// The runs queue: Lambda executors.
    #[default]
    Lambda,
    /// The long-runs queue: workers with no 15-minute bound.
    Long,
}

impl Lane {
    /// The lane for a run allowed `time_limit_seconds`.
    pub fn for_time_limit(time_limit_seconds: u64) -> Self {
        if time_limit_seconds > LAMBDA_RUN_LIMIT_SECONDS { Self::Long } else { Self::Lambda }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_longer_than_lambda_allows_go_to_the_long_lane() {
        assert_eq!(Lane::for_time_limit(0), Lane::Lambda, "a run recorded before limits were");
        assert_eq!(Lane::for_time_limit(LAMBDA_RUN_LIMIT_SECONDS), Lane::Lambda);
        assert_eq!(Lane::for_time_limit(LAMBDA_RUN_LIMIT_SECONDS + 1), Lane::Long);
        assert_eq!(Lane::for_time_limit(7200), Lane::Long);
    }
}
