//! Lock files: opened without following symlinks, locked with `flock(2)`, never deleted.
//!
//! The kernel drops a `flock` lock when its holder dies, so a lock taken here can never go
//! stale. A lock path that is a symlink is refused (exit 77): following it would let anyone who
//! can write the folder make us create or truncate a file elsewhere (CVE-2025-68146 in Python's
//! filelock).

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::exit::{Error, Result};

/// Opens (creating with `mode` if missing) a lock file, refusing symlinks and anything that is
/// not a regular file.
pub fn open(path: &Path, mode: u32) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::permission(format!(
                    "lock file {} is a symlink; refusing to follow it",
                    crate::text::escape(&path.to_string_lossy())
                ))
            } else {
                Error::io(
                    format_args!(
                        "opening lock file {}",
                        crate::text::escape(&path.to_string_lossy())
                    ),
                    &e,
                )
            }
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format_args!("reading lock file {}", path.display()), &e))?;
    if !meta.file_type().is_file() {
        return Err(Error::permission(format!(
            "lock file {} is not a regular file",
            crate::text::escape(&path.to_string_lossy())
        )));
    }
    Ok(file)
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock(2) on a file descriptor we own for the duration of the call.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted || crate::signals::received().is_some() {
            return Err(e);
        }
    }
}

/// Takes the lock, waiting as long as it takes.
pub fn lock(file: &File, exclusive: bool) -> io::Result<()> {
    flock(
        file,
        if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        },
    )
}

/// Takes the lock if it is free; `Ok(false)` when someone else holds it.
pub fn try_lock(file: &File, exclusive: bool) -> io::Result<bool> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    match flock(file, op) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes the lock, polling with short growing sleeps (1 ms up to 20 ms) until `timeout`;
/// `Ok(false)` when it could not.
pub fn lock_timeout(file: &File, exclusive: bool, timeout: Duration) -> io::Result<bool> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        if try_lock(file, exclusive)? {
            return Ok(true);
        }
        let spent = start.elapsed();
        if spent >= timeout {
            return Ok(false);
        }
        std::thread::sleep(delay.min(timeout - spent));
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// Releases the lock (closing the file releases it too).
pub fn unlock(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_UN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_refused_and_nothing_is_created_at_the_target() {
        let dir = std::env::temp_dir().join(format!("elf-core-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok();
        let target = dir.join("target");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).ok();
        let e = open(&link, 0o644).err().map(|e| e.code());
        assert_eq!(e, Some(crate::exit::NOPERM));
        assert!(!target.exists());
        let f = open(&dir.join("l"), 0o644);
        assert!(f.is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn exclusive_excludes_across_open_file_descriptions() {
        let dir = std::env::temp_dir().join(format!("elf-core-lock2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let p = dir.join("l");
        let (Ok(a), Ok(b)) = (open(&p, 0o644), open(&p, 0o644)) else {
            panic!("cannot open lock files in {}", dir.display());
        };
        assert!(matches!(try_lock(&a, true), Ok(true)));
        assert!(matches!(try_lock(&b, true), Ok(false)));
        assert!(matches!(
            lock_timeout(&b, false, Duration::from_millis(30)),
            Ok(false)
        ));
        assert!(unlock(&a).is_ok());
        assert!(matches!(try_lock(&b, true), Ok(true)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
