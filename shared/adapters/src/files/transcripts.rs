//! Session transcripts between the CLI's config dir and the artifact store. The CLI keeps a
//! conversation at `<config dir>/projects/<encoded cwd>/<session id>.jsonl`, plus a folder of the
//! same name; the store keeps the latest under the session's prefix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use runner_core::claude::encoded_project_dir;
use runner_core::domain::{Redactor, Session, object_keys};
use runner_core::ports::{ObjectStore, Transcripts, Workspace};
use runner_core::{Error, Result};

/// Transcripts kept in an object store.
pub struct StoredTranscripts {
    objects: Arc<dyn ObjectStore>,
}

impl StoredTranscripts {
    /// Transcripts kept in `objects`.
    pub fn new(objects: Arc<dyn ObjectStore>) -> Self {
        Self { objects }
    }
}

#[async_trait]
impl Transcripts for StoredTranscripts {
    async fn restore(&self, session: &Session, workspace: &Workspace) -> Result<Uuid> {
        let cli_id = session.cli_session_id.unwrap_or(session.session_id);
        let prefix = session.transcript_prefix.clone().unwrap_or_default();
        let project = encoded_project_dir(&workspace.config_dir, &workspace.work_dir);
        tokio::fs::create_dir_all(&project).await.map_err(|e| Error::dependency("create the project dir", e))?;
        if !self.objects.get_file(&object_keys::transcript(&prefix), &project.join(format!("{cli_id}.jsonl"))).await? {
            return Err(Error::run_failed(
                "transcript_missing",
                format!("the transcript of session {} is no longer in the artifact store", session.session_id),
            ));
        }
        let files = object_keys::transcript_files(&prefix);
        for object in self.objects.list(&files).await? {
            let relative = &object[files.len()..];
            if relative.split('/').any(|part| part == ".." || part.is_empty()) {
                continue;
            }
            let target = project.join(cli_id.to_string()).join(relative);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| Error::dependency("restore session files", e))?;
            }
            self.objects.get_file(&object, &target).await?;
        }
        Ok(cli_id)
    }

    async fn keep(&self, lineage: Uuid, cli_session: Uuid, workspace: &Workspace, redactor: &Redactor) -> bool {
        let prefix = object_keys::session_prefix(lineage);
        let project = encoded_project_dir(&workspace.config_dir, &workspace.work_dir);
        let transcript = project.join(format!("{cli_session}.jsonl"));
        let mut uploads = vec![(transcript, object_keys::transcript(&prefix))];
        let folder = project.join(cli_session.to_string());
        let files = object_keys::transcript_files(&prefix);
        for file in files_under(&folder) {
            if let Ok(relative) = file.strip_prefix(&folder) {
                uploads.push((file.clone(), format!("{files}{}", relative.display())));
            }
        }
        let mut kept = true;
        for (path, key) in uploads {
            // A link (anywhere below the config dir) could have the executor upload another
            // run's files as this session's.
            if !regular_file_without_links(&workspace.config_dir, &path) {
                tracing::warn!(%lineage, path = %path.display(), "transcript file not found");
                kept = false;
                continue;
            }
            // Read whole: transcripts are the conversation's text, small beside the frame log.
            let bytes = match tokio::fs::read(&path).await {
                Ok(bytes) => redactor.bytes(bytes),
                Err(err) => {
                    tracing::error!(%lineage, path = %path.display(), error = %err, "reading the transcript failed");
                    kept = false;
                    continue;
                }
            };
            if let Err(err) = self.objects.put(&key, bytes, "application/octet-stream").await {
                tracing::error!(%lineage, %key, error = %err, "uploading the transcript failed");
                kept = false;
            }
        }
        kept
    }
}

/// Whether `path` is a regular file below `base` reached through no symbolic link.
fn regular_file_without_links(base: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(base) else { return false };
    let mut current = base.to_path_buf();
    for part in relative.components() {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            // file_type() does not follow links: a link can neither loop the walk nor pull in
            // files from outside the session folder.
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(entry.path()),
                Ok(kind) if kind.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files
}
