//! The local stack's metrics: the same events the functions write as CloudWatch embedded metrics
//! on AWS, added up in memory and served at `/metrics` in Prometheus' text format, so a developer
//! can point Prometheus or Grafana at the stack. The most recent events are kept as recorded
//! (trace and run ids included) for tests.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;

use runner_core::ports::{MetricEvent, MetricKind, Metrics};

/// Histogram buckets of every duration, in milliseconds: from a frame's lag to a whole run.
const BUCKETS_MS: [f64; 16] =
    [1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 1e4, 3e4, 6e4, 3e5, 9e5];
/// Events kept as recorded.
const RECENT_EVENTS: usize = 10_000;

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS_MS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct State {
    /// Counters and gauges by (name, kind) then labels.
    values: BTreeMap<(&'static str, Kind), BTreeMap<Labels, f64>>,
    histograms: BTreeMap<&'static str, BTreeMap<Labels, Histogram>>,
    recent: VecDeque<MetricEvent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Counter,
    Gauge,
}

/// Every metric recorded by the stack's functions.
#[derive(Default)]
pub struct LocalMetrics {
    state: Mutex<State>,
}

impl LocalMetrics {
    /// The events recorded most recently, oldest first.
    pub fn recent(&self) -> Vec<MetricEvent> {
        self.lock().recent.iter().cloned().collect()
    }

    /// Everything recorded so far, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let state = self.lock();
        let mut out = String::new();
        for ((name, kind), series) in &state.values {
            let (metric, kind_name) = match kind {
                Kind::Counter => (format!("claude_runner_{}_total", snake(name)), "counter"),
                Kind::Gauge => (format!("claude_runner_{}", snake(name)), "gauge"),
            };
            let _ = writeln!(out, "# TYPE {metric} {kind_name}");
            for (labels, value) in series {
                let _ = writeln!(out, "{metric}{} {value}", label_text(labels, None));
            }
        }
        for (name, series) in &state.histograms {
            let metric = format!("claude_runner_{}_milliseconds", snake(name));
            let _ = writeln!(out, "# TYPE {metric} histogram");
            for (labels, histogram) in series {
                let mut cumulative = 0;
                for (bound, count) in BUCKETS_MS.iter().zip(histogram.buckets) {
                    cumulative += count;
                    let _ =
                        writeln!(out, "{metric}_bucket{} {cumulative}", label_text(labels, Some(&bound.to_string())));
                }
                let _ = writeln!(out, "{metric}_bucket{} {}", label_text(labels, Some("+Inf")), histogram.count);
                let _ = writeln!(out, "{metric}_sum{} {}", label_text(labels, None), histogram.sum);
                let _ = writeln!(out, "{metric}_count{} {}", label_text(labels, None), histogram.count);
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Metrics for LocalMetrics {
    fn record(&self, event: MetricEvent) {
        let labels: Labels = event.dimensions.iter().map(|(name, value)| (snake(name), value.clone())).collect();
        let mut state = self.lock();
        for measurement in &event.measurements {
            let value = measurement.value;
            match measurement.kind {
                MetricKind::Count | MetricKind::Bytes | MetricKind::Amount => {
                    let series = state.values.entry((measurement.name, Kind::Counter)).or_default();
                    *series.entry(labels.clone()).or_default() += value;
                }
                MetricKind::Gauge => {
                    let series = state.values.entry((measurement.name, Kind::Gauge)).or_default();
                    series.insert(labels.clone(), value);
                }
                MetricKind::Millis => {
                    let series = state.histograms.entry(measurement.name).or_default();
                    let histogram = series.entry(labels.clone()).or_default();
                    if let Some(bucket) = BUCKETS_MS.iter().position(|bound| value <= *bound) {
                        histogram.buckets[bucket] += 1;
                    }
                    histogram.count += 1;
                    histogram.sum += value;
                }
            }
        }
        if state.recent.len() == RECENT_EVENTS {
            state.recent.pop_front();
        }
        state.recent.push_back(event);
    }
}

/// `RunsSubmitted` → `runs_submitted`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn label_text(labels: &Labels, le: Option<&str>) -> String {
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_by_label_and_durations_fill_a_histogram() {
        let metrics = LocalMetrics::default();
        for workflow in ["review", "review", "test"] {
            metrics.record(MetricEvent::new().dimension("Workflow", workflow).count("RunsSubmitted", 1));
        }
        metrics.record(MetricEvent::new().millis("QueueWait", Some(40)).millis("QueueWait", Some(4000)));
        metrics.record(MetricEvent::new().with("ActiveSubscribers", 3.0, MetricKind::Gauge));
        metrics.record(MetricEvent::new().with("ActiveSubscribers", 1.0, MetricKind::Gauge));
        let text = metrics.render();
        assert!(text.contains("# TYPE claude_runner_runs_submitted_total counter"), "{text}");
        assert!(text.contains("claude_runner_runs_submitted_total{workflow=\"review\"} 2"), "{text}");
        assert!(text.contains("claude_runner_runs_submitted_total{workflow=\"test\"} 1"), "{text}");
        assert!(text.contains("claude_runner_active_subscribers 1"), "{text}");
        assert!(text.contains("claude_runner_queue_wait_milliseconds_bucket{le=\"50\"} 1"), "{text}");
        assert!(text.contains("claude_runner_queue_wait_milliseconds_bucket{le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("claude_runner_queue_wait_milliseconds_sum 4040"), "{text}");
        assert_eq!(metrics.recent().len(), 6);
    }
}
