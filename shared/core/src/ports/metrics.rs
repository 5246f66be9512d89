//! Metrics: what the use cases measure, handed to whatever records it (CloudWatch's embedded
//! metric format on AWS, Prometheus text on the local stack). Recording never fails and never
//! waits: a metric is not worth slowing a run for.

use crate::domain::{RunId, TraceId};

/// How a measurement adds up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Events: values add up (runs submitted, frames).
    Count,
    /// A level at a moment (subscribers connected now).
    Gauge,
    /// A duration in milliseconds, one observation per value.
    Millis,
    /// Bytes: values add up.
    Bytes,
    /// A plain amount that adds up (US dollars).
    Amount,
}

/// One named value.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// The metric's name, CamelCase (`RunsSubmitted`).
    pub name: &'static str,
    /// The value.
    pub value: f64,
    /// How it adds up.
    pub kind: MetricKind,
}

/// Measurements taken together, with the dimensions that slice them and the trace and run
/// they belong to (kept with the record, not as dimensions: they would explode the series).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricEvent {
    /// Dimension names and values, broadest first (`Workflow`, then `Status`): each prefix is a
    /// series of its own, and the empty prefix is the service-wide total.
    pub dimensions: Vec<(&'static str, String)>,
    /// The values.
    pub measurements: Vec<Measurement>,
    /// The trace the measured work belongs to.
    pub trace_id: Option<TraceId>,
    /// The run measured, if one was.
    pub run_id: Option<RunId>,
}

impl MetricEvent {
    /// An event with no dimensions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dimension (narrower than those before it).
    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, value.into()));
        self
    }

    /// Adds a value.
    pub fn with(mut self, name: &'static str, value: f64, kind: MetricKind) -> Self {
        self.measurements.push(Measurement { name, value, kind });
        self
    }

    /// Adds a count.
    pub fn count(self, name: &'static str, value: u64) -> Self {
        self.with(name, value as f64, MetricKind::Count)
    }

    /// Adds a duration in milliseconds, when there is one.
    pub fn millis(self, name: &'static str, value: Option<u64>) -> Self {
        match value {
            Some(ms) => self.with(name, ms as f64, MetricKind::Millis),
            None => self,
        }
    }

    /// Names the run and trace measured.
    pub fn of_run(mut self, run_id: RunId, trace_id: Option<&TraceId>) -> Self {
        self.run_id = Some(run_id);
        self.trace_id = trace_id.cloned();
        self
    }
}

/// Where measurements go.
pub trait Metrics: Send + Sync {
    /// Records `event`; never fails, never blocks for long.
    fn record(&self, event: MetricEvent);
}

/// Records nothing: for tools and tests that do not measure.
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn record(&self, _event: MetricEvent) {}
}
