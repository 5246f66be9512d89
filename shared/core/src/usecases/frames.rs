//! Frames on their way out. Live sinks (the WebSocket fan-out) get each frame as soon as it is
//! read; persistence (the run's frame log, then Postgres) writes beside them on a task of its
//! own, in batches of whatever queued while the last batch was written — so no frame waits on a
//! timer — and tells the live sinks how far it got, so they know which frames they may forget.

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
    /// Bytes of those frames' lines.
    pub bytes: u64,
    /// Batches they went out in.
    pub batches: u64,
    /// Sink writes retried after a failure.
    pub retries: u64,
    /// Sink batches dropped after every retry failed (the NDJSON log still has them).
    pub failed_batches: u64,
    /// The local log could not be written (disk full); sinks still got every frame.
    pub log_failed: bool,
}

type InFlight = (Frame, usize, tokio::sync::OwnedSemaphorePermit);

/// Takes frames from the CLI reader: hands each to the live sinks at once, and to persistence on
/// a task of its own, so the reader never waits on storage unless too many bytes are in flight.
pub struct FrameRecorder {
    live: Vec<Arc<dyn FrameSink>>,
    tx: mpsc::Sender<InFlight>,
    budget: Arc<tokio::sync::Semaphore>,
    task: JoinHandle<Result<RecorderReport>>,
}

impl FrameRecorder {
    /// Starts publishing to the live `sinks` and persisting to `log` and the others.
    pub fn start(sinks: Vec<Arc<dyn FrameSink>>, log: Box<dyn FrameLog>) -> Self {
        let (live, stored): (Vec<_>, Vec<_>) = sinks.into_iter().partition(|sink| sink.is_live());
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(write_batches(rx, log, stored, live.clone()));
        Self { live, tx, budget: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_BYTES)), task }
    }

    /// Hands a frame (of roughly `size` bytes) to the writer, waiting while too many bytes are
    /// already in flight.
    pub async fn record(&self, frame: Frame, size: usize) {
        for sink in &self.live {
            if let Err(err) = sink.publish(std::slice::from_ref(&frame)).await {
                tracing::warn!(sink = sink.name(), seq = frame.seq, error = %err, "live frame not published");
            }
        }
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
    live: Vec<Arc<dyn FrameSink>>,
) -> Result<RecorderReport> {
    let mut report = RecorderReport::default();
    let mut log = Some(log);
    // `stored` tells live sinks every frame through a seq is persisted: once a batch could not
    // be, nothing after it may be announced, so they keep those frames for late subscribers.
    let mut all_stored = true;
    while let Some((first, size, first_permit)) = rx.recv().await {
        let mut bytes = size;
        let mut batch = vec![first];
        let mut permits = vec![first_permit];
        // Whatever queued while the last batch was written: busy runs batch, quiet ones do not wait.
        while batch.len() < MAX_BATCH_FRAMES
            && bytes < MAX_BATCH_BYTES
            && let Ok((frame, size, permit)) = rx.try_recv()
        {
            bytes += size;
            batch.push(frame);
            permits.push(permit);
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
            let (stored, retries) = publish_with_retries(sink.as_ref(), &batch).await;
            report.retries += u64::from(retries);
            if !stored {
                report.failed_batches += 1;
                all_stored = false;
            }
        }
        if let Some(last) = batch.last().filter(|_| all_stored) {
            for sink in &live {
                sink.stored(last.run_id, last.seq).await;
            }
        }
        report.frames += batch.len() as u64;
        report.bytes += bytes as u64;
        report.batches += 1;
        drop(permits);
    }
    Ok(report)
}

/// Whether the sink took the batch, and how many retries that needed.
async fn publish_with_retries(sink: &dyn FrameSink, batch: &[Frame]) -> (bool, u32) {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=SINK_ATTEMPTS {
        match sink.publish(batch).await {
            Ok(()) => return (true, attempt - 1),
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
    (false, SINK_ATTEMPTS - 1)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::Utc;

    use super::*;
    use crate::domain::{Frame, RunId};
    use crate::ports::{FrameLog, FrameSink};

    /// A store that takes every frame up to `fails_from` (exclusive), and none after.
    struct Store {
        fails_from: u64,
    }

    #[async_trait]
    impl FrameSink for Store {
        fn name(&self) -> &'static str {
            "store"
        }
        async fn publish(&self, frames: &[Frame]) -> Result<()> {
            match frames.iter().any(|f| f.seq >= self.fails_from) {
                true => Err(Error::dependency("store", "down")),
                false => Ok(()),
            }
        }
    }

    /// A live sink remembering what it was told is stored.
    #[derive(Default)]
    struct Live {
        stored: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl FrameSink for Live {
        fn name(&self) -> &'static str {
            "live"
        }
        async fn publish(&self, _frames: &[Frame]) -> Result<()> {
            Ok(())
        }
        fn is_live(&self) -> bool {
            true
        }
        async fn stored(&self, _run_id: RunId, through_seq: u64) {
            self.stored.lock().unwrap().push(through_seq);
        }
    }

    struct NoLog(PathBuf);

    #[async_trait]
    impl FrameLog for NoLog {
        async fn append(&mut self, _frames: &[Frame]) -> Result<()> {
            Ok(())
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_past_a_batch_the_store_did_not_take_is_announced_as_stored() {
        let live = Arc::new(Live::default());
        let sinks: Vec<Arc<dyn FrameSink>> = vec![Arc::new(Store { fails_from: 3 }), live.clone()];
        let recorder = FrameRecorder::start(sinks, Box::new(NoLog(PathBuf::from("log"))));
        let run = RunId::new();
        for seq in 1..=5 {
            let line = format!(r#"{{"type":"assistant","n":{seq}}}"#);
            recorder.record(Frame::from_line(run, seq, line.as_bytes(), line.len(), Utc::now()), line.len()).await;
            // One batch a frame: each is written before the next arrives.
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let report = recorder.finish().await.unwrap();
        assert_eq!(report.failed_batches, 3, "frames 3, 4 and 5 never reached the store");
        assert_eq!(*live.stored.lock().unwrap(), vec![1, 2], "stored only through what the store took");
    }
}
