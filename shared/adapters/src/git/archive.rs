//! The workspace archive: the checkout as tar + zstd, links kept as links, the `.env` left out.

use std::path::{Path, PathBuf};

/// Writes the tree under `source` to `output`.
pub(super) fn write_archive(source: PathBuf, output: PathBuf) -> std::io::Result<()> {
    let file = std::fs::File::create(&output)?;
    let encoder = zstd::Encoder::new(file, 3)?.auto_finish();
    let mut tar = tar::Builder::new(encoder);
    // Links are archived as links, never followed out of the workspace.
    tar.follow_symlinks(false);
    append_tree(&mut tar, &source, Path::new(""))?;
    tar.into_inner()?;
    Ok(())
}

/// Adds `root/relative` to the archive without following links, leaving out the `.env`.
fn append_tree<W: std::io::Write>(tar: &mut tar::Builder<W>, root: &Path, relative: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let name = relative.join(entry.file_name());
        if name == Path::new(".env") {
            continue;
        }
        let kind = entry.file_type()?;
        tar.append_path_with_name(entry.path(), &name)?;
        if kind.is_dir() {
            append_tree(tar, root, &name)?;
        }
    }
    Ok(())
}
