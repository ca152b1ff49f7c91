//! `.git/index.lock`: taken the way git takes it, waited for when another process has it, and
//! removed only when it is provably stale.
//!
//! Git creates `index.lock` with `O_CREAT|O_EXCL` and keeps it until it has renamed the new
//! index into place; a process that dies in between leaves it behind and every later git
//! command fails. Git never removes it, because deleting a live process's lock corrupts the
//! index. elf-commit removes one only when
//!
//! - it was left by an elf-commit that is gone: elf-commit writes a marker into its own lock
//!   (`elf-commit pid P start T boot B pidns N`), and P is no longer that process; or
//! - no process on this machine has it open (every `/proc/*/fd` of the lock owner's user is
//!   inspected) and it is older than `--stale-index-lock`;
//!
//! and, in both cases, only after checking again under `.git/elf-commit-stale.lock`, so that two
//! elf-commits never both "remove" a lock and then delete each other's new one.

use std::fs::{File, Metadata};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use elf_core::backoff::{Jitter, Policy, Schedule};
use elf_core::text::escape;
use elf_core::{Error, lockfile, process, signals};

/// A held `index.lock`, removed on drop. Termination signals stay blocked while it is held, so
/// an interrupt lands after it is removed rather than leaving it behind.
pub struct IndexLock {
    path: PathBuf,
    /// The lock's file (this lock's own, or a [`Holder`]'s, linked).
    file: File,
    _signals: signals::Blocked,
}

impl IndexLock {
    /// Declares, in the lock, the ref lock this process is about to take and the id it will
    /// write there. A later run that finds this `index.lock` left by a dead elf-commit can then
    /// tell that ref lock is that process's own, and remove it too (see [`remove_stale`]).
    pub fn declare_ref_lock(&self, lock: &Path, new: &str) {
        use std::os::unix::fs::FileExt;
        let base = marker().len() as u64;
        let line = format!("ref {new} {}\n", lock.display());
        if self.file.write_all_at(line.as_bytes(), base).is_ok() {
            let _ = self.file.set_len(base + line.len() as u64);
        }
    }

    /// Withdraws the declaration once the ref lock is released.
    pub fn clear_declaration(&self) {
        let _ = self.file.set_len(marker().len() as u64);
    }
}

/// A file of this process, with its marker, hard-linked as `index.lock` to take the lock.
///
/// `link(2)` fails when the name exists, exactly as `O_CREAT|O_EXCL` does, but allocates no
/// inode: on file systems where creating files is the slow part, that is one creation fewer
/// per commit. The file is `.git/elf-commit-lock.PID`, kept open (so a holder shows up in
/// `/proc`) and removed on drop; one left by a killed process is removed by the next run.
pub struct Holder {
    path: PathBuf,
    file: File,
}

impl Holder {
    /// Creates this process's file, after removing those of elf-commits that are gone.
    pub fn create(gitdir: &Path) -> std::io::Result<Holder> {
        if let Ok(entries) = std::fs::read_dir(gitdir) {
            for e in entries.flatten() {
                let name = e.file_name();
                if name.as_encoded_bytes().starts_with(b"elf-commit-lock.")
                    && dead_elf_commit(&e.path()).is_some()
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let path = gitdir.join(format!("elf-commit-lock.{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)?;
        if let Err(e) = file.write_all(marker().as_bytes()) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Holder { path, file })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for IndexLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the caller wants when the lock is busy.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Give up at this instant (exit 75).
    pub deadline: Instant,
    /// The whole timeout, for the message.
    pub timeout: Duration,
    /// Remove a lock nobody has open once it is older than this; `None` never.
    pub stale: Option<Duration>,
}

/// Takes `gitdir/index.lock`, waiting with backoff while another process has it.
pub fn acquire(gitdir: &Path, wait: Wait, holder: Option<&Holder>) -> Result<IndexLock, Error> {
    let path = gitdir.join("index.lock");
    let policy = Policy {
        base: Duration::from_millis(2),
        max_delay: Duration::from_millis(250),
        jitter: Jitter::Equal,
    };
    let mut schedule = Schedule::new(policy, None);
    let mut holder = holder;
    loop {
        let signals = signals::Blocked::handled();
        if let Some(h) = holder {
            // Its age is the lock's age for everyone who looks.
            let _ = h.file.set_modified(SystemTime::now());
            match std::fs::hard_link(&h.path, &path) {
                Ok(()) => {
                    let file = match h.file.try_clone() {
                        Ok(f) => f,
                        Err(e) => {
                            let _ = std::fs::remove_file(&path);
                            return Err(Error::io("holding index.lock", &e));
                        }
                    };
                    return Ok(IndexLock {
                        path,
                        file,
                        _signals: signals,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                // No hard links here: create the lock instead, from now on.
                Err(_) => {
                    holder = None;
                    continue;
                }
            }
        }
        if holder.is_none() {
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path);
            match created {
                Ok(mut file) => {
                    if let Err(e) = file.write_all(marker().as_bytes()) {
                        let _ = std::fs::remove_file(&path);
                        return Err(Error::io(
                            format_args!("writing {}", escape(&path.to_string_lossy())),
                            &e,
                        ));
                    }
                    return Ok(IndexLock {
                        path,
                        file,
                        _signals: signals,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::io(
                        format_args!("creating {}", escape(&path.to_string_lossy())),
                        &e,
                    ));
                }
            }
        }
        drop(signals);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // released meanwhile
        };
        if let Some(reason) = removable(&path, &meta, wait.stale) {
            remove_stale(gitdir, &path, &meta, wait, &reason)?;
            continue;
        }
        let now = Instant::now();
        if now >= wait.deadline {
            return Err(Error::temporary(busy_message(
                "git index",
                &path,
                &meta,
                wait,
            )));
        }
        std::thread::sleep(schedule.next_delay().min(wait.deadline - now));
    }
}

/// Why a lock may be removed now, or `None`.
fn removable(path: &Path, meta: &Metadata, stale: Option<Duration>) -> Option<String> {
    let dead_owner = dead_elf_commit(path);
    let old = stale.filter(|limit| age(meta) >= *limit);
    if dead_owner.is_none() && old.is_none() {
        return None;
    }
    let scan = holders(meta);
    if !scan.holders.is_empty() || scan.hidden > 0 {
        return None;
    }
    Some(match dead_owner {
        Some(pid) => format!(
            "it was left by elf-commit process {pid}, which is gone, and no process has it open"
        ),
        None => format!(
            "no process on this machine has it open and it is {} old (--stale-index-lock {})",
            human(age(meta)),
            human(stale.unwrap_or_default())
        ),
    })
}

/// Removes a stale lock after checking again, under a lock only stale-removers take.
fn remove_stale(
    gitdir: &Path,
    path: &Path,
    judged: &Metadata,
    wait: Wait,
    reason: &str,
) -> Result<(), Error> {
    let guard_path = gitdir.join("elf-commit-stale.lock");
    let guard = lockfile::open(&guard_path, 0o644)?;
    let left = wait
        .deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10));
    let got = lockfile::lock_timeout(&guard, true, left)
        .map_err(|e| Error::io(format_args!("locking {}", guard_path.display()), &e))?;
    if !got {
        return Ok(()); // someone else is cleaning it up; the caller looks again
    }
    let same = std::fs::symlink_metadata(path).is_ok_and(|now| {
        now.ino() == judged.ino()
            && now.dev() == judged.dev()
            && now.ctime() == judged.ctime()
            && now.ctime_nsec() == judged.ctime_nsec()
    });
    if same && removable(path, judged, wait.stale).is_some() {
        if let Some(pid) = dead_elf_commit(path) {
            if let Some((new, ref_lock)) = declared_ref_lock(path) {
                release_ref_lock(&ref_lock, &new, pid);
            }
        }
        match std::fs::remove_file(path) {
            Ok(()) => elf_core::warn(format_args!("removed stale {}: {reason}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format_args!("removing stale {}", path.display()),
                    &e,
                ));
            }
        }
    }
    let _ = lockfile::unlock(&guard);
    Ok(())
}

/// The ref lock and new id declared in a lock (see [`IndexLock::declare_ref_lock`]).
fn declared_ref_lock(path: &Path) -> Option<(String, PathBuf)> {
    let mut head = [0u8; 4096];
    let n = File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let text = std::str::from_utf8(&head[..n]).ok()?;
    let line = text.lines().nth(1)?;
    let rest = line.strip_prefix("ref ")?;
    let (new, lock) = rest.split_once(' ')?;
    Some((new.to_string(), PathBuf::from(lock)))
}

/// Removes a ref lock a dead elf-commit declared, if it is still the one it declared: empty
/// (libgit2 writes it at the end) or holding the id it was to write, and open nowhere.
fn release_ref_lock(lock: &Path, new: &str, pid: u32) {
    let Ok(meta) = std::fs::symlink_metadata(lock) else {
        return;
    };
    let mut head = [0u8; 128];
    let Ok(n) = File::open(lock).and_then(|mut f| f.read(&mut head)) else {
        return;
    };
    let content = String::from_utf8_lossy(&head[..n]);
    if !(content.is_empty() || content.trim_end() == new) {
        return;
    }
    let scan = holders(&meta);
    if scan.holders.is_empty() && scan.hidden == 0 && std::fs::remove_file(lock).is_ok() {
        elf_core::warn(format_args!(
            "removed stale {}: it was left by elf-commit process {pid}, which is gone",
            lock.display()
        ));
    }
}

/// A ref lock found busy: removes it (true) when no process on this machine has it open and it
/// is older than `--stale-index-lock`, after checking again under the stale-removers' lock.
pub fn clear_old_lock(gitdir: &Path, lock: &Path, wait: Wait) -> Result<bool, Error> {
    let Some(limit) = wait.stale else {
        return Ok(false);
    };
    let Ok(meta) = std::fs::symlink_metadata(lock) else {
        return Ok(true); // gone already: try again
    };
    let unused = |m: &Metadata| {
        let scan = holders(m);
        age(m) >= limit && scan.holders.is_empty() && scan.hidden == 0
    };
    if !unused(&meta) {
        return Ok(false);
    }
    let guard_path = gitdir.join("elf-commit-stale.lock");
    let guard = lockfile::open(&guard_path, 0o644)?;
    let got = lockfile::lock_timeout(&guard, true, Duration::from_secs(1))
        .map_err(|e| Error::io(format_args!("locking {}", guard_path.display()), &e))?;
    if !got {
        return Ok(false);
    }
    let same = std::fs::symlink_metadata(lock).is_ok_and(|now| {
        now.ino() == meta.ino()
            && now.ctime() == meta.ctime()
            && now.ctime_nsec() == meta.ctime_nsec()
    });
    let removed = same && unused(&meta) && std::fs::remove_file(lock).is_ok();
    if removed {
        elf_core::warn(format_args!(
            "removed stale {}: no process on this machine has it open and it is {} old (--stale-index-lock {})",
            lock.display(),
            human(age(&meta)),
            human(limit)
        ));
    }
    let _ = lockfile::unlock(&guard);
    Ok(removed)
}

/// Why a lock is busy, for the message of exit 75.
pub fn busy_reason(what: &str, lock: &Path, wait: Wait) -> String {
    match std::fs::symlink_metadata(lock) {
        Ok(meta) => busy_message(what, lock, &meta, wait),
        Err(_) => format!(
            "{} was busy; gave up after {}",
            escape(&lock.to_string_lossy()),
            human(wait.timeout)
        ),
    }
}

fn busy_message(what: &str, path: &Path, meta: &Metadata, wait: Wait) -> String {
    let scan = holders(meta);
    let who = if !scan.holders.is_empty() {
        let list: Vec<String> = scan
            .holders
            .iter()
            .map(|(pid, comm)| format!("{} (pid {pid})", escape(comm)))
            .collect();
        format!("held open by {}", list.join(", "))
    } else if scan.hidden > 0 {
        format!(
            "no process visible here has it open, but {} processes of its owner could not be inspected",
            scan.hidden
        )
    } else {
        let removal = match wait.stale {
            Some(limit) => format!(
                "it will be removed as stale once {} old (--stale-index-lock)",
                human(limit)
            ),
            None => "stale removal is disabled (--stale-index-lock 0)".to_string(),
        };
        format!("no process on this machine has it open; {removal}")
    };
    format!(
        "{what} is locked: {} exists (age {}); {who}; gave up after {}",
        escape(&path.to_string_lossy()),
        human(age(meta)),
        human(wait.timeout)
    )
}

fn age(meta: &Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default()
}

/// `1.5s`, `3m20s`.
fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{}s", (s * 10.0).round() / 10.0)
    } else {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// Processes that have the file open.
struct Scan {
    holders: Vec<(u32, String)>,
    /// Processes of the file's owner whose descriptors could not be read.
    hidden: usize,
}

/// Looks through `/proc/*/fd` for the file `meta` describes.
fn holders(meta: &Metadata) -> Scan {
    let mut scan = Scan {
        holders: Vec::new(),
        hidden: 0,
    };
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        scan.hidden = 1; // no /proc: nothing can be proven
        return scan;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = p.path();
        let fds = match std::fs::read_dir(dir.join("fd")) {
            Ok(fds) => fds,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // Only the lock's owner (or root) could have created it.
                if std::fs::metadata(&dir).is_ok_and(|m| m.uid() == meta.uid()) {
                    scan.hidden += 1;
                }
                continue;
            }
            Err(_) => continue, // exited
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let name = target.to_string_lossy();
            if !(name.ends_with("index.lock") || name.ends_with("index.lock (deleted)")) {
                continue;
            }
            if std::fs::metadata(fd.path())
                .is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev())
            {
                let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                scan.holders.push((pid, comm.trim().to_string()));
                break;
            }
        }
    }
    scan
}

/// This process's marker, written into the locks it takes.
fn marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let pid = std::process::id();
        format!(
            "elf-commit pid {pid} start {} boot {} pidns {}\n",
            start_time(pid).unwrap_or_default(),
            boot_id(),
            pid_namespace()
        )
    })
}

/// The pid recorded in the lock, when it names an elf-commit on this boot and in this pid
/// namespace that is no longer running.
fn dead_elf_commit(path: &Path) -> Option<u32> {
    let mut head = [0u8; 256];
    let n = File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let text = std::str::from_utf8(&head[..n]).ok()?;
    let words: Vec<&str> = text.lines().next()?.split(' ').collect();
    let [
        "elf-commit",
        "pid",
        pid,
        "start",
        start,
        "boot",
        boot,
        "pidns",
        ns,
    ] = words[..]
    else {
        return None;
    };
    if boot.is_empty()
        || ns.is_empty()
        || start.is_empty()
        || boot != boot_id()
        || ns != pid_namespace()
    {
        return None;
    }
    let pid: u32 = pid.parse().ok()?;
    match start_time(pid) {
        Some(now) if now == start => None,
        _ => Some(pid),
    }
}

fn start_time(pid: u32) -> Option<String> {
    process::start_time(&pid.to_string()).map(|t| t.to_string())
}

fn boot_id() -> &'static str {
    process::boot_id().unwrap_or_default()
}

fn pid_namespace() -> &'static str {
    static NS: OnceLock<String> = OnceLock::new();
    NS.get_or_init(|| {
        std::fs::read_link("/proc/self/ns/pid")
            .map(|p| {
                p.to_string_lossy()
                    .chars()
                    .filter(|c| c.is_ascii_digit())
                    .collect()
            })
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_marker_names_a_live_process() {
        let dir = std::env::temp_dir().join(format!("elf-commit-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let lock = dir.join("index.lock");
        std::fs::write(&lock, marker()).ok();
        assert_eq!(dead_elf_commit(&lock), None, "{}", marker());
        let fake = marker().replacen(&format!("pid {} ", std::process::id()), "pid 999999999 ", 1);
        std::fs::write(&lock, fake).ok();
        if !boot_id().is_empty() && !pid_namespace().is_empty() {
            assert_eq!(dead_elf_commit(&lock), Some(999_999_999));
        }
        std::fs::write(&lock, b"DIRC\0\0\0\x02 index data").ok();
        assert_eq!(dead_elf_commit(&lock), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(1520)), "1.5s");
        assert_eq!(human(Duration::from_secs(600)), "10m0s");
    }
}
