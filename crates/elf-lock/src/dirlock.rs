//! Legacy directory locks (`--mkdir DIR`): the lock is held while DIR exists.
//!
//! ELF's fallback when flock(1) was missing was `mkdir .git/claude-lock.dir`, and a crash left
//! the directory behind forever. elf-lock takes such a lock the same way (mkdir(2) is atomic,
//! so legacy scripts and elf-lock exclude each other), and adds what the legacy lock lacked:
//!
//! - an owner file `DIR/owner` holding the holder record (see `holder.rs`), written to a
//!   temporary name and renamed into place, so it is either absent or complete;
//! - a shared `flock(2)` on DIR itself, held by the owner as long as it lives, which tells any
//!   other elf-lock that the owner is alive without trusting the record;
//! - breaking: an existing DIR is removed only when its owner is provably gone. The breaker
//!   takes an exclusive `flock` on DIR (impossible while its elf-lock owner lives, and only one
//!   breaker at a time), checks that the path still names the same directory, decides from the
//!   owner file (same host and boot, and the pid gone or reused by a process with another start
//!   time; with no owner file, a legacy holder, or one that yields no record, only when DIR is
//!   older than `--stale-after`),
//!   then renames DIR to a unique name, checks that it moved the directory it examined, and
//!   deletes it. A lock is never broken by age when its owner is known, and a lock whose owner
//!   runs on another host is never broken.
//!
//! Breaking leaves DIR free, and every contender then races for mkdir(2): exactly one wins.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use elf_core::{Error, Result};

use crate::holder::{self, Liveness, Me};
use elf_core::paths::show;

/// The owner file's name inside the lock directory.
pub const OWNER: &str = "owner";

/// A directory lock held by this process; released (removed) on drop.
pub struct DirLock {
    path: PathBuf,
    dir: File,
    dev: u64,
    ino: u64,
}

/// What a look at an existing lock directory found.
pub enum Seen {
    /// DIR was not there (any more): try mkdir again.
    Gone,
    /// DIR was broken: try mkdir again.
    Broken,
    /// DIR is held; the text says by whom.
    Held(String),
}

/// Tries once to take the lock at `path`.
pub fn try_take(path: &Path, record: &[u8]) -> Result<Option<DirLock>> {
    let c = cpath(path)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkdir(c.as_ptr(), 0o755) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(None);
        }
        return Err(Error::io(
            format_args!("creating lock directory {}", show(path)),
            &e,
        ));
    }
    let dir = match open_dir(path) {
        Ok(Some(dir)) => dir,
        // Removed under us (only a breaker with a tiny --stale-after can): not ours.
        Ok(None) => return Ok(None),
        Err(e) => {
            // Leave no ownerless directory behind.
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::rmdir(c.as_ptr()) };
            return Err(e);
        }
    };
    flock(&dir, libc::LOCK_SH)
        .map_err(|e| Error::io(format_args!("locking {}", show(path)), &e))?;
    let meta = dir
        .metadata()
        .map_err(|e| Error::io(format_args!("reading {}", show(path)), &e))?;
    let lock = DirLock {
        path: path.to_path_buf(),
        dir,
        dev: meta.dev(),
        ino: meta.ino(),
    };
    if !lock.still_there() {
        return Ok(None);
    }
    write_owner(&lock.dir, record)
        .map_err(|e| Error::io(format_args!("writing the owner file in {}", show(path)), &e))?;
    Ok(Some(lock))
}

/// Looks at the existing lock directory at `path` and breaks it if its owner is provably gone.
pub fn examine(path: &Path, me: &Me, stale_after: Duration) -> Result<Seen> {
    let Some(dir) = open_dir(path)? else {
        return Ok(Seen::Gone);
    };
    match flock(&dir, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            let who = match owner(&dir) {
                Owner::Record(r) => match r.get("pid").and_then(serde_json::Value::as_u64) {
                    Some(pid) => format!("held by pid {pid} (alive)"),
                    None => "held by a live process".to_string(),
                },
                Owner::Bad(why) => format!(
                    "held by a live process; its owner file {} {why}",
                    quoted(&path.join(OWNER))
                ),
                Owner::Missing => "held (being examined by another process)".to_string(),
            };
            return Ok(Seen::Held(who));
        }
        Err(e) => return Err(Error::io(format_args!("locking {}", show(path)), &e)),
    }
    let meta = dir
        .metadata()
        .map_err(|e| Error::io(format_args!("reading {}", show(path)), &e))?;
    if !same_file(path, meta.dev(), meta.ino()) {
        return Ok(Seen::Gone);
    }
    let owner = owner(&dir);
    let verdict = match &owner {
        Owner::Record(rec) => {
            let pid = rec
                .get("pid")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            match holder::liveness(rec, me) {
                Liveness::Gone => Some(format!("its owner, pid {pid}, is gone")),
                Liveness::Alive => return Ok(Seen::Held(format!("held by pid {pid} (alive)"))),
                Liveness::Unknown => {
                    let host = rec
                        .get("host")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("?");
                    return Ok(Seen::Held(format!(
                        "held by pid {pid} on host {host} (cannot be checked from here)"
                    )));
                }
            }
        }
        Owner::Missing | Owner::Bad(_) => {
            // No owner to check: judged by age alone, as a legacy holder is.
            let holder = match &owner {
                Owner::Bad(why) => format!(
                    "an unknown holder (its owner file {} {why})",
                    quoted(&path.join(OWNER))
                ),
                _ => "a legacy holder (no owner file)".to_string(),
            };
            let age = age(&meta);
            if age < stale_after {
                return Ok(Seen::Held(format!(
                    "held by {holder} for {:.0}s; broken after {}s",
                    age.as_secs_f64(),
                    stale_after.as_secs_f64()
                )));
            }
            Some(format!(
                "it is held by {holder} and is {:.0}s old (--stale-after {}s)",
                age.as_secs_f64(),
                stale_after.as_secs_f64()
            ))
        }
    };
    let why = verdict.unwrap_or_default();
    // Move it out of the way atomically, then make sure what moved is what was examined.
    let aside = aside_name(path);
    std::fs::rename(path, &aside)
        .map_err(|e| Error::io(format_args!("breaking lock directory {}", show(path)), &e))?;
    if !same_file(&aside, meta.dev(), meta.ino()) {
        // Someone replaced it between the check and the rename; put it back if we can.
        let _ = rename_noreplace(&aside, path);
        return Ok(Seen::Gone);
    }
    elf_core::warn(format_args!(
        "broke stale lock directory {}: {why}",
        show(path)
    ));
    remove_contents(&dir);
    if let Err(e) = std::fs::remove_dir(&aside) {
        elf_core::warn(format_args!("could not remove {}: {e}", show(&aside)));
    }
    Ok(Seen::Broken)
}

impl DirLock {
    /// The descriptor of the directory, which carries the owner's shared flock.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.dir.as_raw_fd()
    }

    fn still_there(&self) -> bool {
        same_file(&self.path, self.dev, self.ino)
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if !self.still_there() {
            elf_core::warn(format_args!(
                "lock directory {} was removed by someone else",
                show(&self.path)
            ));
            return;
        }
        remove_contents(&self.dir);
        if let Err(e) = std::fs::remove_dir(&self.path) {
            elf_core::warn(format_args!(
                "could not remove lock directory {}: {e}",
                show(&self.path)
            ));
        }
    }
}

/// Removes the owner file (and a leftover temporary one) from an open lock directory.
fn remove_contents(dir: &File) {
    for name in [OWNER, "owner.tmp"] {
        if let Ok(c) = CString::new(name) {
            // SAFETY: a directory descriptor we own and a valid relative name.
            unsafe {
                libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0);
            }
        }
    }
}

fn write_owner(dir: &File, record: &[u8]) -> io::Result<()> {
    let tmp = c"owner.tmp";
    let fin = c"owner";
    // SAFETY: a directory descriptor we own and valid names; the new descriptor is owned by
    // the File made from it.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(record)?;
    drop(f);
    // SAFETY: as above.
    if unsafe { libc::renameat(dir.as_raw_fd(), tmp.as_ptr(), dir.as_raw_fd(), fin.as_ptr()) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the owner file of a lock directory holds.
pub enum Owner {
    /// A holder record.
    Record(serde_json::Map<String, serde_json::Value>),
    /// No owner file: a legacy holder, or an owner that has not written it yet.
    Missing,
    /// An owner file that yields no record; the text says why ("cannot be read: ...").
    Bad(String),
}

/// The largest owner file read (a record is a few hundred bytes).
const MAX_OWNER: u64 = 64 * 1024;

/// Reads the owner file of an open lock directory.
pub fn owner(dir: &File) -> Owner {
    use std::io::Read;
    let name = c"owner";
    // SAFETY: a directory descriptor we own and a valid name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Owner::Missing,
            Some(libc::ELOOP) => Owner::Bad("is a symlink, not a holder record".to_string()),
            _ => Owner::Bad(format!("cannot be read: {}", os_text(&e))),
        };
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let f = unsafe { File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    if let Err(e) = f.take(MAX_OWNER).read_to_end(&mut bytes) {
        return Owner::Bad(format!("cannot be read: {}", os_text(&e)));
    }
    match holder::parse(&bytes) {
        Some(rec) => Owner::Record(rec),
        None if bytes.is_empty() => Owner::Bad("is empty, not a holder record".to_string()),
        None => Owner::Bad("cannot be parsed as a holder record".to_string()),
    }
}

/// The owner record of an open lock directory, if it has one that parses.
pub fn read_owner(dir: &File) -> Option<serde_json::Map<String, serde_json::Value>> {
    match owner(dir) {
        Owner::Record(rec) => Some(rec),
        Owner::Missing | Owner::Bad(_) => None,
    }
}

/// An I/O error's text without std's " (os error N)".
fn os_text(e: &io::Error) -> String {
    let t = e.to_string();
    t.rfind(" (os error ")
        .map_or(t.clone(), |i| t[..i].to_string())
}

/// A path for a message, in double quotes, control characters escaped.
fn quoted(path: &Path) -> String {
    format!("\"{}\"", show(path))
}

/// Opens a directory without following a symlink; `None` when it does not exist.
pub fn open_dir(path: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            Err(Error::permission(format!(
                "lock directory {} is a symlink or not a directory; refusing it",
                show(path)
            )))
        }
        Err(e) => Err(Error::io(
            format_args!("opening lock directory {}", show(path)),
            &e,
        )),
    }
}

fn same_file(path: &Path, dev: u64, ino: u64) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

fn age(meta: &std::fs::Metadata) -> Duration {
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(meta.mtime()).unwrap_or(0), 0);
    SystemTime::now().duration_since(mtime).unwrap_or_default()
}

fn aside_name(path: &Path) -> PathBuf {
    let mut name: OsString = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(format!(
        ".broken-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    path.with_file_name(name)
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (a, b) = (
        cpath(from).map_err(io::Error::other)?,
        cpath(to).map_err(io::Error::other)?,
    );
    // SAFETY: valid NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock(2) on a descriptor we own for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) || elf_core::signals::received().is_some() {
            return Err(e);
        }
    }
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::usage(format!("path {} contains a NUL byte", show(path))))
}
