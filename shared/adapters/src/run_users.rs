//! Per-run users. Where the executor runs as root (the ECS worker, the local stack), each run's
//! CLI runs under a uid and gid of its own, taken from a configured range: its commands cannot
//! read the executor's environment or another run's workspace, cannot write the repository cache
//! or the executor's files, and everything that uid still runs when the run ends is killed — a
//! process that left the group and cleared its environment included. Lambda has no root; there
//! the CLI runs as the executor's user (docs/security.md says what holds then).

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid};

use runner_core::ports::Workspace;
use runner_core::{Error, Result};

/// The uids a deployment gives its runs, `first..first + count`; each run's gid is its uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunUserRange {
    /// The first uid.
    pub first: u32,
    /// How many there are; at least as many as runs that may run at once on one executor.
    pub count: u32,
}

impl RunUserRange {
    /// Far above the uids of any image's own users and below the 2^31 some tools mishandle.
    pub const DEFAULT: Self = Self { first: 200_000, count: 65_536 };

    /// `RUN_USERS`: `off`, `auto` (the default range when the executor is root, else off) or
    /// `FIRST-LAST`. `Ok(None)`: runs use the executor's own user.
    pub fn from_setting(value: Option<&str>, is_root: bool) -> Result<Option<Self>> {
        let invalid = |why: &str| Error::Config(format!("RUN_USERS {why}: expected off, auto or FIRST-LAST"));
        match value.map(str::trim) {
            None | Some("" | "auto") => Ok(is_root.then_some(Self::DEFAULT)),
            Some("off") => Ok(None),
            Some(range) => {
                let (first, last) = range.split_once('-').ok_or_else(|| invalid("is not a range"))?;
                let (first, last): (u32, u32) = (
                    first.trim().parse().map_err(|_| invalid("has a first uid that is not a number"))?,
                    last.trim().parse().map_err(|_| invalid("has a last uid that is not a number"))?,
                );
                if first < 1000 || last < first || last >= 1 << 31 {
                    return Err(invalid("must lie within 1000..2^31, first to last"));
                }
                if !is_root {
                    return Err(Error::Config("RUN_USERS names a range, but the executor is not root".into()));
                }
                Ok(Some(Self { first, count: last - first + 1 }))
            }
        }
    }
}

/// The uids not in use by a run of this executor, handed out round-robin so a uid is reused as
/// late as possible.
pub struct RunUsers {
    range: RunUserRange,
    /// Where uids are claimed against other processes.
    claims: PathBuf,
    state: Mutex<Pool>,
}

struct Pool {
    next: u32,
    in_use: HashSet<u32>,
}

impl RunUsers {
    /// A pool over `range`.
    pub fn new(range: RunUserRange) -> Arc<Self> {
        Self::claimed_in(range, PathBuf::from(CLAIMS_DIR))
    }

    /// A pool whose claims go to `claims` (a directory only the executor's user may write).
    pub fn claimed_in(range: RunUserRange, claims: PathBuf) -> Arc<Self> {
        Arc::new(Self { range, claims, state: Mutex::new(Pool { next: 0, in_use: HashSet::new() }) })
    }

    /// A uid no other run holds, in this executor or any other process on the machine (several
    /// executors may share one kernel: local stacks, tests); it returns to the pool when dropped.
    pub fn take(self: &Arc<Self>) -> Result<RunUser> {
        let unavailable = |e: std::io::Error| Error::dependency("claim a run user", e);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.claims).map_err(unavailable)?;
        let mut pool = self.state.lock().expect("run users lock");
        for _ in 0..self.range.count {
            let uid = self.range.first + pool.next;
            pool.next = (pool.next + 1) % self.range.count;
            if pool.in_use.contains(&uid) {
                continue;
            }
            // An advisory lock: the kernel drops it with its process, so a crashed executor
            // frees its uids by itself.
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.claims.join(uid.to_string()))
                .map_err(unavailable)?;
            let Ok(claim) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { continue };
            pool.in_use.insert(uid);
            // An executor that died holding the uid released its claim with its process, not
            // the processes its run left: none of them may share the next run's uid.
            if kill_all_of(uid, None) > 0 {
                tracing::error!(uid, "processes of a dead executor's run survived under a uid now reused");
            }
            return Ok(RunUser { uid, pool: self.clone(), left: true, _claim: claim });
        }
        Err(Error::run_failed("cli_start_failed", "every run user is in use"))
    }

    /// Fails unless a run user can reach each path: every directory above it searchable by
    /// others (a run's uid is in no group of the executor's), the path itself too when it is a
    /// directory, and readable and executable when it is a file (the CLI).
    pub fn check_reachable(paths: &[&Path]) -> Result<()> {
        for path in paths {
            let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            let mut blocked = Vec::new();
            for dir in resolved.ancestors().skip(1).filter(|dir| dir.exists()) {
                if std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 == 0) {
                    blocked.push(dir.display().to_string());
                }
            }
            if let Ok(meta) = std::fs::metadata(&resolved) {
                let needs = if meta.is_dir() { 0o001 } else { 0o005 };
                if meta.permissions().mode() & needs != needs {
                    blocked.push(resolved.display().to_string());
                }
            }
            if !blocked.is_empty() {
                return Err(Error::Config(format!(
                    "per-run users cannot reach {}: {} is not open to other users (chmod o+x on a \
                     directory, o+rx on the CLI), or set RUN_USERS=off",
                    path.display(),
                    blocked.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// One run's uid (and gid), held from the CLI's start until everything it ran is gone.
pub struct RunUser {
    uid: u32,
    pool: Arc<RunUsers>,
    /// Nothing of this uid is running and its workspace is handed back.
    left: bool,
    /// This process's claim on the uid, against every other on the machine.
    _claim: Flock<std::fs::File>,
}

/// Where uids are claimed: root's alone (a run could plant a directory in /tmp).
const CLAIMS_DIR: &str = "/run/claude-runner/run-users";

/// World-writable places where a run may leave files outside its workspace.
const SHARED_TEMP_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];
/// Rounds of killing every process of the uid; one is enough unless a process was forking.
const KILL_ROUNDS: u32 = 50;

impl RunUser {
    /// The run's uid; its gid is the same number.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Makes `command` run as this user, with no supplementary groups (std drops them when a
    /// root parent sets a uid).
    pub fn apply(&self, command: &mut std::process::Command) {
        command.uid(self.uid).gid(self.uid);
    }

    /// Hands the run its directories: the checkout, home, temp and config dirs become its own
    /// (mode 0700), the run's directory becomes searchable by its group alone (mode 0710: the
    /// executor's files there, the trusted git config and the frame log, stay the executor's).
    pub fn enter(&mut self, workspace: &Workspace) -> Result<()> {
        let fail = |e: std::io::Error| Error::dependency("hand the workspace to the run's user", e);
        let (uid, gid) = (Some(self.uid), Some(self.uid));
        std::os::unix::fs::lchown(&workspace.root, None, gid).map_err(fail)?;
        std::fs::set_permissions(&workspace.root, std::fs::Permissions::from_mode(0o710)).map_err(fail)?;
        let mut owned: Vec<&Path> =
            vec![&workspace.work_dir, &workspace.home_dir, &workspace.tmp_dir, &workspace.config_dir];
        owned.extend(workspace.mcp_config.as_deref());
        self.left = false;
        for path in owned {
            chown_tree(path, uid, gid).map_err(fail)?;
        }
        Ok(())
    }

    /// Ends the run's hold: kills every process of its uid, removes what it left in the shared
    /// temp dirs, and gives its directories back to the executor's user, so that what follows
    /// (commit, push, archive) works on files no process of the run can touch any more.
    /// `cli` is the CLI's own pid, whose exit status its parent still has to read.
    pub fn leave(&mut self, workspace: &Workspace, cli: Option<u32>) {
        if self.left {
            return;
        }
        self.left = true;
        let survivors = kill_all_of(self.uid, cli);
        if survivors > 0 {
            tracing::error!(uid = self.uid, survivors, "processes of a run's user survived every kill round");
        }
        for dir in SHARED_TEMP_DIRS {
            remove_owned_entries(Path::new(dir), self.uid);
        }
        let (uid, gid) = (Some(Uid::effective().as_raw()), Some(Gid::effective().as_raw()));
        let root = std::os::unix::fs::lchown(&workspace.root, uid, gid)
            .and_then(|()| std::fs::set_permissions(&workspace.root, std::fs::Permissions::from_mode(0o700)));
        if let Err(err) = root {
            tracing::error!(path = %workspace.root.display(), error = %err, "taking the run's directory back failed");
        }
        for path in [&workspace.work_dir, &workspace.home_dir, &workspace.tmp_dir, &workspace.config_dir] {
            if let Err(err) = chown_tree(path, uid, gid) {
                tracing::error!(path = %path.display(), error = %err, "taking the workspace back failed");
            }
        }
        if let Some(mcp) = &workspace.mcp_config {
            let _ = chown_tree(mcp, uid, gid);
        }
    }
}

impl Drop for RunUser {
    fn drop(&mut self) {
        if !self.left {
            // Abandoned without `leave` (the run's task was aborted): at least nothing of it
            // runs on under a uid the next run may get.
            kill_all_of(self.uid, None);
        }
        self.pool.state.lock().expect("run users lock").in_use.remove(&self.uid);
    }
}

/// `chown` of `path` and everything under it, links changed themselves and never followed.
fn chown_tree(path: &Path, uid: Option<u32>, gid: Option<u32>) -> std::io::Result<()> {
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(current) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        std::os::unix::fs::lchown(&current, uid, gid)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&current)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Kills every process whose real or effective uid is `uid`, round after round until none is
/// left (a process forking while a round runs may spawn a child the round missed); returns how
/// many are still there after the last round.
fn kill_all_of(uid: u32, spare: Option<u32>) -> usize {
    for _ in 0..KILL_ROUNDS {
        // `kill(-1)` as the uid itself signals all of its processes in one step, which no scan
        // of /proc can race; Linux never signals the caller with it.
        let mut command = std::process::Command::new("/bin/true");
        command.uid(uid).gid(uid);
        // SAFETY: `kill` is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
                Ok(())
            });
        }
        if let Err(err) = command.status() {
            tracing::warn!(uid, error = %err, "could not start the killer of a run's processes; scanning /proc");
            for pid in processes_of(uid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let left = processes_of(uid);
        if left.is_empty() {
            return 0;
        }
        // Killed processes re-parented to the executor (its subreaper) are reaped here; not the
        // CLI, whose exit status is read by whoever started it.
        for pid in left.iter().filter(|pid| Some(**pid as u32) != spare) {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(*pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        // Killed processes take a moment to become zombies.
        std::thread::sleep(Duration::from_millis(5));
    }
    processes_of(uid).len()
}

/// Processes of `uid` that still run (zombies are dead already: only their reaper is missing).
fn processes_of(uid: u32) -> Vec<i32> {
    crate::processes::pids()
        .into_iter()
        .filter(|pid| {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
            let zombie = status.lines().any(|l| l.starts_with("State:") && l.contains('Z'));
            let of_uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .is_some_and(|ids| ids.split_whitespace().take(2).any(|id| id == uid.to_string()));
            of_uid && !zombie
        })
        .collect()
}

/// Removes the entries directly under `dir` that `uid` owns (with all they hold; links are
/// removed, never followed). Only called once no process of the uid runs, so nothing races it.
fn remove_owned_entries(dir: &Path, uid: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        if meta.uid() != uid {
            continue;
        }
        let removed =
            if meta.is_dir() { std::fs::remove_dir_all(entry.path()) } else { std::fs::remove_file(entry.path()) };
        if let Err(err) = removed {
            tracing::warn!(path = %entry.path().display(), error = %err, "removing what a run left behind failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_off_auto_or_a_range_and_a_range_needs_root() {
        assert_eq!(RunUserRange::from_setting(None, true).unwrap(), Some(RunUserRange::DEFAULT));
        assert_eq!(RunUserRange::from_setting(Some("auto"), false).unwrap(), None);
        assert_eq!(RunUserRange::from_setting(Some("off"), true).unwrap(), None);
        assert_eq!(
            RunUserRange::from_setting(Some("300000-300009"), true).unwrap(),
            Some(RunUserRange { first: 300_000, count: 10 })
        );
        for bad in ["10-20", "5000-4000", "x-5000", "5000", "5000-4294967295"] {
            assert!(RunUserRange::from_setting(Some(bad), true).is_err(), "{bad}");
        }
        assert!(RunUserRange::from_setting(Some("300000-300009"), false).is_err());
    }

    #[test]
    fn uids_are_handed_out_round_robin_never_twice_at_once() {
        let claims = tempfile::tempdir().unwrap();
        let users = RunUsers::claimed_in(RunUserRange { first: 300_000, count: 3 }, claims.path().into());
        let a = users.take().unwrap();
        let b = users.take().unwrap();
        let c = users.take().unwrap();
        assert_eq!([a.uid(), b.uid(), c.uid()], [300_000, 300_001, 300_002]);
        assert!(users.take().is_err(), "all three are in use");
        drop(b);
        assert_eq!(users.take().unwrap().uid(), 300_001, "the one given back");
        let mut held = vec![a, c];
        held.clear();
        // Round-robin: after 300_001 comes 300_002, not the lowest free uid.
        assert_eq!(users.take().unwrap().uid(), 300_002);
    }

    #[test]
    fn a_path_behind_a_closed_folder_is_unreachable_and_names_the_folder() {
        use std::os::unix::fs::PermissionsExt as _;
        let closed = tempfile::tempdir().unwrap();
        std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let cli = closed.path().join("claude");
        std::fs::write(&cli, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = RunUsers::check_reachable(&[&cli]).unwrap_err().to_string();
        assert!(err.contains(&closed.path().display().to_string()), "{err}");
        std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        RunUsers::check_reachable(&[&cli]).unwrap();
        std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(RunUsers::check_reachable(&[&cli]).is_err(), "a CLI others cannot run");
    }

    #[test]
    fn a_uid_another_process_claimed_is_skipped() {
        let claims = tempfile::tempdir().unwrap();
        let range = RunUserRange { first: 300_000, count: 2 };
        // Two pools over one claims directory stand for two executors on one machine.
        let (ours, theirs) =
            (RunUsers::claimed_in(range, claims.path().into()), RunUsers::claimed_in(range, claims.path().into()));
        let held = theirs.take().unwrap();
        assert_eq!(held.uid(), 300_000);
        assert_eq!(ours.take().unwrap().uid(), 300_001, "the other executor's uid is skipped");
        drop(held);
        assert!(ours.take().is_ok_and(|user| user.uid() == 300_000), "free again once its holder let go");
    }
}
