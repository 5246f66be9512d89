//! Frames on their way out. Live sinks (the WebSocket fan-out) get each frame as soon as it is
//! read; persistence (the run's frame log, then Postgres) writes beside them on a task of its
//! own, in batches of whatever queued while the last batch was written — so no frame waits on a
//! timer — and tells the live sinks how far it got, so they know which frames they may forget.
//!
//! A store that fails is retried with backoff for a bounded time while the run goes on (frames
//! queue in bounded memory; past that the reader waits); a batch it still refused is back-filled
//! from the run's own log when the run ends, so an outage of the store loses no frame it recovers
//! from by then.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::domain::Frame;
use crate::ports::{FrameLog, FrameSink};
use crate::{Error, Result};

const MAX_BATCH_FRAMES: usize = 500;
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How long one batch keeps being retried before the writer moves on (and back-fills it later).
const SINK_RETRY_BUDGET: Duration = Duration::from_secs(30);
/// The longest wait between two attempts.
const SINK_RETRY_CAP: Duration = Duration::from_secs(5);
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
    /// Sink batches still missing after every retry and the back-fill (the NDJSON log, uploaded
    /// to the artifact store, still has them).
    pub failed_batches: u64,
    /// Sink batches written late, from the log, when the run ended.
    pub backfilled_batches: u64,
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
    // What each stored sink refused, as (sink, first seq, last seq), to back-fill at the end.
    let mut missing: Vec<(usize, u64, u64)> = Vec::new();
    let mut trace = None;
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
        trace = trace.or_else(|| batch[0].trace_id.clone());
        for (index, sink) in sinks.iter().enumerate() {
            let (stored, retries) = publish_with_retries(sink.as_ref(), &batch).await;
            report.retries += u64::from(retries);
            if !stored {
                missing.push((index, batch[0].seq, batch[batch.len() - 1].seq));
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
    // The run has ended: what a store refused comes from the log (its writes are idempotent).
    // A store still down after one more retry budget gets no further tries: the run's end must
    // not wait a budget per missing batch.
    let mut still_down = vec![false; sinks.len()];
    for (index, first, last) in missing {
        if still_down[index] {
            report.failed_batches += 1;
            continue;
        }
        let frames = match log.as_ref().map(|log| log.read_back(first, last)) {
            Some(read) => read.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let frames: Vec<Frame> = frames.into_iter().map(|f| f.in_trace(trace.clone())).collect();
        let complete = frames.len() as u64 == last - first + 1;
        let (stored, retries) = match complete {
            true => publish_with_retries(sinks[index].as_ref(), &frames).await,
            false => (false, 0),
        };
        report.retries += u64::from(retries);
        if stored {
            report.backfilled_batches += 1;
        } else {
            still_down[index] = complete;
            report.failed_batches += 1;
        }
    }
    Ok(report)
}

/// Whether the sink took the batch within `SINK_RETRY_BUDGET`, and how many retries it took.
async fn publish_with_retries(sink: &dyn FrameSink, batch: &[Frame]) -> (bool, u32) {
    let give_up = tokio::time::Instant::now() + SINK_RETRY_BUDGET;
    let mut wait = Duration::from_millis(100);
    let mut retries = 0;
    loop {
        match sink.publish(batch).await {
            Ok(()) => return (true, retries),
            Err(err) if tokio::time::Instant::now() + wait < give_up => {
                tracing::warn!(sink = sink.name(), retries, error = %err, "frame batch failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(SINK_RETRY_CAP);
                retries += 1;
            }
            Err(err) => {
                let first = batch.first().map(|f| f.seq).unwrap_or_default();
                tracing::error!(sink = sink.name(), first_seq = first, frames = batch.len(), error = %err, "frame batch not stored; back-filled when the run ends");
                return (false, retries);
            }
        }
    }
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
        async fn read_back(&self, _first: u64, _last: u64) -> Result<Vec<Frame>> {
            Ok(Vec::new())
        }
    }

    /// A log in memory.
    #[derive(Default)]
    struct MemLog(PathBuf, Vec<Frame>);

    #[async_trait]
    impl FrameLog for MemLog {
        async fn append(&mut self, frames: &[Frame]) -> Result<()> {
            self.1.extend_from_slice(frames);
            Ok(())
        }
        fn path(&self) -> &Path {
            &self.0
        }
        async fn read_back(&self, first: u64, last: u64) -> Result<Vec<Frame>> {
            Ok(self.1.iter().filter(|f| (first..=last).contains(&f.seq)).cloned().collect())
        }
    }

    /// A store that is down until `up_at`, and keeps what it took.
    struct Outage {
        up_at: tokio::time::Instant,
        stored: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl FrameSink for Outage {
        fn name(&self) -> &'static str {
            "store"
        }
        async fn publish(&self, frames: &[Frame]) -> Result<()> {
            if tokio::time::Instant::now() < self.up_at {
                return Err(Error::dependency("store", "down"));
            }
            let mut stored = self.stored.lock().unwrap();
            for frame in frames {
                if !stored.contains(&frame.seq) {
                    stored.push(frame.seq);
                }
            }
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_down_past_the_retry_budget_loses_nothing_it_comes_back_from_by_the_end() {
        let store = Arc::new(Outage {
            up_at: tokio::time::Instant::now() + Duration::from_secs(100),
            stored: Mutex::default(),
        });
        let recorder = FrameRecorder::start(vec![store.clone()], Box::new(MemLog::default()));
        let run = RunId::new();
        for seq in 1..=6 {
            let line = format!(r#"{{"type":"assistant","n":{seq}}}"#);
            recorder.record(Frame::from_line(run, seq, line.as_bytes(), line.len(), Utc::now()), line.len()).await;
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        let report = recorder.finish().await.unwrap();
        let mut stored = store.stored.lock().unwrap().clone();
        stored.sort_unstable();
        assert_eq!(stored, vec![1, 2, 3, 4, 5, 6], "every frame reached the store: {report:?}");
        assert_eq!(report.failed_batches, 0);
        assert!(report.backfilled_batches >= 1 && report.retries > 0, "{report:?}");
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
