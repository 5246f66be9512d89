//! Frames on their way out: batched (at most `flush` late), appended to the run's local NDJSON
//! log and published to every sink (Postgres, WebSockets, …) in `seq` order.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::domain::Frame;
use crate::ports::FrameSink;
use crate::{Error, Result};

const MAX_BATCH_FRAMES: usize = 500;
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
const SINK_ATTEMPTS: u32 = 4;
/// Frames in flight between the CLI reader and the writer; beyond it the reader waits, so a
/// stalled database slows the run instead of growing memory without bound.
const CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct RecorderReport {
    pub frames: u64,
    pub batches: u64,
    /// Sink batches dropped after every retry failed (the NDJSON log still has them).
    pub failed_batches: u64,
}

pub struct FrameRecorder {
    tx: mpsc::Sender<(Frame, usize)>,
    task: JoinHandle<Result<RecorderReport>>,
}

impl FrameRecorder {
    pub async fn start(sinks: Vec<Arc<dyn FrameSink>>, log_path: PathBuf, flush: Duration) -> Result<Self> {
        let file =
            tokio::fs::File::create(&log_path).await.map_err(|e| Error::dependency("create the frame log", e))?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(write_batches(rx, tokio::io::BufWriter::new(file), sinks, flush));
        Ok(Self { tx, task })
    }

    /// Hands a frame (of roughly `size` bytes) to the writer.
    pub async fn record(&self, frame: Frame, size: usize) {
        if self.tx.send((frame, size)).await.is_err() {
            tracing::error!("frame writer stopped early; frame dropped");
        }
    }

    /// Flushes everything and closes the log.
    pub async fn finish(self) -> Result<RecorderReport> {
        drop(self.tx);
        self.task.await.map_err(|e| Error::dependency("frame writer", e))?
    }
}

async fn write_batches(
    mut rx: mpsc::Receiver<(Frame, usize)>,
    mut log: tokio::io::BufWriter<tokio::fs::File>,
    sinks: Vec<Arc<dyn FrameSink>>,
    flush: Duration,
) -> Result<RecorderReport> {
    let mut report = RecorderReport::default();
    while let Some((first, size)) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + flush;
        let mut bytes = size;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((frame, size))) => {
                    bytes += size;
                    batch.push(frame);
                }
                Ok(None) | Err(_) => break,
            }
        }
        for frame in &batch {
            let mut line = serde_json::to_vec(frame).map_err(|e| Error::dependency("encode frame", e))?;
            line.push(b'\n');
            log.write_all(&line).await.map_err(|e| Error::dependency("write the frame log", e))?;
        }
        log.flush().await.map_err(|e| Error::dependency("write the frame log", e))?;
        for sink in &sinks {
            if !publish_with_retries(sink.as_ref(), &batch).await {
                report.failed_batches += 1;
            }
        }
        report.frames += batch.len() as u64;
        report.batches += 1;
    }
    log.flush().await.map_err(|e| Error::dependency("write the frame log", e))?;
    Ok(report)
}

async fn publish_with_retries(sink: &dyn FrameSink, batch: &[Frame]) -> bool {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=SINK_ATTEMPTS {
        match sink.publish(batch).await {
            Ok(()) => return true,
            Err(err) if attempt < SINK_ATTEMPTS => {
                tracing::warn!(sink = sink.name(), attempt, error = %err, "frame batch failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(err) => {
                let first = batch.first().map(|f| f.seq).unwrap_or_default();
                tracing::error!(sink = sink.name(), first_seq = first, frames = batch.len(), error = %err, "frame batch dropped");
            }
        }
    }
    false
}
