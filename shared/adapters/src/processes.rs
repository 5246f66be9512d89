//! The machine's processes, as `/proc` lists them: what the sandbox's sweeps look through.

/// The pids of every process there is (none where `/proc` cannot be read).
pub(crate) fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}
