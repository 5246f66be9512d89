//! The run's frame log: one JSON line per frame in `<workspace root>/output.ndjson`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncWriteExt as _, BufWriter};

use runner_core::domain::Frame;
use runner_core::ports::{FrameLog, FrameLogs, Workspace};
use runner_core::{Error, Result};

/// Opens frame logs in workspaces.
pub struct NdjsonFrameLogs;

#[async_trait]
impl FrameLogs for NdjsonFrameLogs {
    async fn open(&self, workspace: &Workspace) -> Result<Box<dyn FrameLog>> {
        let path = workspace.root.join("output.ndjson");
        let file = tokio::fs::File::create(&path).await.map_err(|e| Error::dependency("create the frame log", e))?;
        Ok(Box::new(NdjsonFrameLog { file: BufWriter::new(file), path }))
    }
}

struct NdjsonFrameLog {
    file: BufWriter<tokio::fs::File>,
    path: PathBuf,
}

#[async_trait]
impl FrameLog for NdjsonFrameLog {
    async fn append(&mut self, frames: &[Frame]) -> Result<()> {
        for frame in frames {
            let mut line = serde_json::to_vec(frame).map_err(|e| Error::dependency("encode frame", e))?;
            line.push(b'\n');
            self.file.write_all(&line).await.map_err(|e| Error::dependency("write the frame log", e))?;
        }
        self.file.flush().await.map_err(|e| Error::dependency("write the frame log", e))
    }

    fn path(&self) -> &Path {
        &self.path
    }

    async fn read_back(&self, first: u64, last: u64) -> Result<Vec<Frame>> {
        let text =
            tokio::fs::read_to_string(&self.path).await.map_err(|e| Error::dependency("read the frame log", e))?;
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str::<Frame>(line).ok())
            .filter(|frame| (first..=last).contains(&frame.seq))
            .collect())
    }
}
