//! Metrics as CloudWatch's embedded metric format: one JSON line per event on stdout, which
//! Lambda's log stream carries to CloudWatch and CloudWatch turns into metrics. No agent, no API
//! call, nothing to fail on the request path.

use std::io::Write;
use std::sync::Mutex;

use runner_core::ports::{MetricEvent, MetricKind, Metrics};
use serde_json::{Map, Value, json};

/// The namespace every metric of the service is in.
pub const NAMESPACE: &str = "ClaudeRunner";

/// Writes each event as an embedded-metric-format line.
pub struct EmbeddedMetrics {
    out: Mutex<Box<dyn Write + Send>>,
    /// The function that recorded the events (a property, not a dimension).
    function: Option<String>,
}

impl EmbeddedMetrics {
    /// Lines on stdout, where Lambda's log stream picks them up.
    pub fn stdout() -> Self {
        Self::to_writer(Box::new(std::io::stdout()))
    }

    /// Lines into `out`.
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        Self { out: Mutex::new(out), function: std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok() }
    }

    /// The line for `event`, stamped `timestamp_ms`.
    pub fn line(event: &MetricEvent, timestamp_ms: i64, function: Option<&str>) -> Value {
        let mut root = Map::new();
        // Every prefix of the dimensions is a series: [] is the service-wide total.
        let dimension_sets: Vec<Vec<&str>> = (0..=event.dimensions.len())
            .map(|n| event.dimensions[..n].iter().map(|(name, _)| *name).collect())
            .collect();
        let mut definitions: Vec<Value> = Vec::new();
        let mut values: Map<String, Value> = Map::new();
        for measurement in &event.measurements {
            let value = json!(measurement.value);
            match values.get_mut(measurement.name) {
                // The same metric again: CloudWatch takes up to 100 values as an array.
                Some(Value::Array(list)) => list.push(value),
                Some(single) => *single = Value::Array(vec![single.take(), value]),
                None => {
                    values.insert(measurement.name.to_owned(), value);
                    definitions.push(json!({"Name": measurement.name, "Unit": unit(measurement.kind)}));
                }
            }
        }
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": dimension_sets, "Metrics": definitions}],
            }),
        );
        for (name, value) in &event.dimensions {
            root.insert((*name).to_owned(), json!(value));
        }
        root.extend(values);
        if let Some(trace_id) = &event.trace_id {
            root.insert("trace_id".into(), json!(trace_id.as_str()));
        }
        if let Some(run_id) = event.run_id {
            root.insert("run_id".into(), json!(run_id.to_string()));
        }
        if let Some(function) = function {
            root.insert("function".into(), json!(function));
        }
        Value::Object(root)
    }
}

fn unit(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Count | MetricKind::Gauge => "Count",
        MetricKind::Millis => "Milliseconds",
        MetricKind::Bytes => "Bytes",
        MetricKind::Amount => "None",
    }
}

impl Metrics for EmbeddedMetrics {
    fn record(&self, event: MetricEvent) {
        if event.measurements.is_empty() {
            return;
        }
        let line = Self::line(&event, chrono::Utc::now().timestamp_millis(), self.function.as_deref());
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // One write per line, so log lines never interleave with it; a failed write is dropped.
        let _ = out.write_all(format!("{line}\n").as_bytes()).and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use runner_core::domain::{RunId, TraceId};

    use super::*;

    #[test]
    fn an_event_becomes_one_embedded_metric_line_with_every_dimension_prefix() {
        let trace = TraceId::generate();
        let run = RunId::new();
        let event = MetricEvent::new()
            .dimension("Workflow", "review")
            .dimension("Status", "completed")
            .count("RunsFinished", 1)
            .millis("CliTime", Some(1200))
            .with("StreamLag", 3.0, MetricKind::Millis)
            .with("StreamLag", 5.0, MetricKind::Millis)
            .of_run(run, Some(&trace));
        let line = EmbeddedMetrics::line(&event, 1_700_000_000_000, Some("executor"));
        let spec = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(spec["Namespace"], "ClaudeRunner");
        assert_eq!(spec["Dimensions"], json!([[], ["Workflow"], ["Workflow", "Status"]]));
        assert_eq!(
            spec["Metrics"],
            json!([
                {"Name": "RunsFinished", "Unit": "Count"},
                {"Name": "CliTime", "Unit": "Milliseconds"},
                {"Name": "StreamLag", "Unit": "Milliseconds"},
            ])
        );
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000_i64);
        assert_eq!((line["Workflow"].as_str(), line["Status"].as_str()), (Some("review"), Some("completed")));
        assert_eq!(line["StreamLag"], json!([3.0, 5.0]));
        assert_eq!(line["trace_id"], trace.as_str());
        assert_eq!(line["run_id"], run.to_string());
        assert_eq!(line["function"], "executor");
    }

    #[test]
    fn lines_are_written_whole_one_per_event() {
        #[derive(Clone, Default)]
        struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Shared::default();
        let metrics = EmbeddedMetrics::to_writer(Box::new(out.clone()));
        metrics.record(MetricEvent::new().count("RunsSubmitted", 1));
        metrics.record(MetricEvent::new());
        metrics.record(MetricEvent::new().dimension("Workflow", "test").count("RunsSubmitted", 2));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "an event without values writes nothing");
        assert_eq!(lines[1]["RunsSubmitted"], 2.0);
    }
}
