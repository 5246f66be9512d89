//! Frames on their way out: batched (at most `flush` late), appended to the run's frame log and
//! published to every sink (Postgres, WebSockets, …) in `seq` order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::domain::Frame;
use crate::ports::{FrameLog, FrameSink};
use crate::{Error, Result};

const MAX_BATCH_FRAMES: usize = 500;
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
const SINK_ATTEMPTS: u32 = 4;
const CHANNEL_CAPACITY: usize = 4096;
/// Bytes of frames in flight between the CLI reader and the writer; beyond it the reader waits,
/// so a stalled database slows the run instead of growing memory without bound.
const IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// What the recorder did with a run's frames.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RecorderReport {
    /// Frames recorded.
    pub frames: u64,
    /// Batches they went out in.
    pub batches: u64,
    /// Sink batches dropped after every retry failed (the NDJSON log still has them).
    pub failed_batches: u64,
    /// The local log could not be written (disk full); sinks still got every frame.
    pub log_failed: bool,
}

type InFlight = (Frame, usize, tokio::sync::OwnedSemaphorePermit);

/// Takes frames from the CLI reader and writes them out on a task of its own, so the reader
/// never waits on a sink unless too many bytes are already in flight.
pub struct FrameRecorder {
    tx: mpsc::Sender<InFlight>,
    budget: Arc<tokio::sync::Semaphore>,
    task: JoinHandle<Result<RecorderReport>>,
}

impl FrameRecorder {
    /// Starts writing to `log` and `sinks`, in batches at most `flush` late.
    pub fn start(sinks: Vec<Arc<dyn FrameSink>>, log: Box<dyn FrameLog>, flush: Duration) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(write_batches(rx, log, sinks, flush));
        Self { tx, budget: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_BYTES)), task }
    }

    /// Hands a frame (of roughly `size` bytes) to the writer, waiting while too many bytes are
    /// already in flight.
    pub async fn record(&self, frame: Frame, size: usize) {
        let permits = size.clamp(1, IN_FLIGHT_BYTES) as u32;
        let Ok(permit) = self.budget.clone().acquire_many_owned(permits).await else { return };
        if self.tx.send((frame, size, permit)).await.is_err() {
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
    mut rx: mpsc::Receiver<InFlight>,
    log: Box<dyn FrameLog>,
    sinks: Vec<Arc<dyn FrameSink>>,
    flush: Duration,
) -> Result<RecorderReport> {
    let mut report = RecorderReport::default();
    let mut log = Some(log);
    while let Some((first, size, first_permit)) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + flush;
        let mut bytes = size;
        let mut batch = vec![first];
        let mut permits = vec![first_permit];
        while batch.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((frame, size, permit))) => {
                    bytes += size;
                    batch.push(frame);
                    permits.push(permit);
                }
                Ok(None) | Err(_) => break,
            }
        }
        if let Some(file) = log.as_mut()
            && let Err(err) = file.append(&batch).await
        {
            // The sinks matter more than the local copy: keep publishing without it.
            tracing::error!(error = %err, "writing the frame log failed; continuing without it");
            report.log_failed = true;
            log = None;
        }
        for sink in &sinks {
            if !publish_with_retries(sink.as_ref(), &batch).await {
                report.failed_batches += 1;
            }
        }
        report.frames += batch.len() as u64;
        report.batches += 1;
        drop(permits);
    }
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
