//! Lock files: opened without following symlinks, locked with `flock(2)`.
//!
//! The kernel drops a `flock` lock when its holder dies, so a lock taken here can never go
//! stale. A lock that an enclosing holder already holds for this process tree counts as held
//! ([`take`], [`lock_timeout`]; see [`crate::held`]). A lock path that is a symlink is refused (exit 77): following it would let anyone who
//! can write the folder make us create or truncate a file elsewhere (CVE-2025-68146 in Python's
//! filelock).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Once;
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

/// How [`take`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// Locked by this call; [`unlock`] (or closing the file) releases it.
    Locked,
    /// An enclosing holder holds it for this process tree ([`crate::held`]): nothing was
    /// locked, and nothing is to be released, nor the lock file removed.
    Enclosed,
    /// Held by someone else past the wait allowed.
    Busy,
}

/// After this long waiting (at once when `ELF_LOCK_HELD` is set), ask whether this process's
/// own ancestry holds the lock.
const ANCESTRY_AFTER: Duration = Duration::from_millis(20);

/// Takes the lock, waiting as `wait` says (`None`: as long as it takes; zero: not at all).
///
/// A lock held by this process's own ancestry counts as held when the holder passed it down
/// (`Got::Enclosed`); when it did not, or the hold is shared and `exclusive` is asked for,
/// waiting would never end, and the error (kind `WouldBlock`, so status 75) says who holds it.
pub fn take(file: &File, exclusive: bool, wait: Option<Duration>) -> io::Result<Got> {
    if try_lock(file, exclusive)? {
        return Ok(Got::Locked);
    }
    // Whether our own ancestry holds it: at once when a holder passed locks down
    // (ELF_LOCK_HELD) or no wait is allowed; otherwise after a short first wait, so that the
    // common contention (another process, released within milliseconds) costs no reading of
    // /proc.
    let mut wait = wait;
    if std::env::var_os(crate::held::VAR).is_none() && wait != Some(Duration::ZERO) {
        let first = wait.map_or(ANCESTRY_AFTER, |t| t.min(ANCESTRY_AFTER));
        let started = std::time::Instant::now();
        if wait_timeout(file, exclusive, first)? {
            return Ok(Got::Locked);
        }
        wait = wait.map(|t| t.saturating_sub(started.elapsed()));
    }
    match crate::held::enclosing(file, exclusive) {
        crate::held::Enclosing::Held => return Ok(Got::Enclosed),
        crate::held::Enclosing::Deadlock(why) => {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, why));
        }
        crate::held::Enclosing::No | crate::held::Enclosing::Ancestor(_) => {}
    }
    let got = match wait {
        None => lock(file, exclusive).map(|()| true)?,
        Some(t) => wait_timeout(file, exclusive, t)?,
    };
    Ok(if got { Got::Locked } else { Got::Busy })
}

/// Takes the lock, waiting at most `timeout`; `Ok(false)` when it could not. A lock that an
/// enclosing holder passed down counts as held ([`take`]), and unlocking it afterwards does
/// nothing.
pub fn lock_timeout(file: &File, exclusive: bool, timeout: Duration) -> io::Result<bool> {
    Ok(take(file, exclusive, Some(timeout))? != Got::Busy)
}

/// Takes the lock, waiting at most `timeout`; `Ok(false)` when it could not.
///
/// The wait is a blocking `flock(2)`, so the kernel hands the lock over the moment it is free
/// (no polling, no sleep to oversleep). The deadline is a timer whose SIGALRM
/// interrupts the call (the handler is installed without `SA_RESTART`); the timer keeps firing
/// every millisecond after it first expires, so a signal that lands between the deadline check
/// and the call cannot leave the call blocked: at worst the wait ends a millisecond late. The
/// timer signals the waiting thread alone, and is deleted before returning. elf-lock's waits use
/// the same SIGALRM handler with the process's interval timer ([`set_timer`]).
fn wait_timeout(file: &File, exclusive: bool, timeout: Duration) -> io::Result<bool> {
    if try_lock(file, exclusive)? {
        return Ok(true);
    }
    let Some(deadline) = Instant::now().checked_add(timeout) else {
        lock(file, exclusive)?;
        return Ok(true);
    };
    if timeout.is_zero() {
        return Ok(false);
    }
    install_alarm_handler();
    let _timer = Timer::set(timeout, Duration::from_millis(1))?;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    loop {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        // SAFETY: flock(2) on a descriptor we own for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted || crate::signals::received().is_some() {
            return Err(e);
        }
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Installs the SIGALRM handler that timed waits rely on: it does nothing, and without
/// `SA_RESTART` a blocked `flock(2)` returns EINTR when the timer fires.
pub fn install_alarm_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler does nothing, so it is trivially
        // async-signal-safe. No SA_RESTART: the blocked flock(2) returns EINTR.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_alarm as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            act.sa_flags = 0;
            libc::sigaction(libc::SIGALRM, &act, std::ptr::null_mut());
        }
    });
}

/// Sets the process's real-time interval timer: SIGALRM after `value`, then every `interval`
/// (a zero `value` disarms it).
pub fn set_timer(value: Duration, interval: Duration) -> io::Result<()> {
    let tv = |d: Duration| libc::timeval {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(d.subsec_micros()),
    };
    let it = libc::itimerval {
        it_interval: tv(interval),
        it_value: tv(value),
    };
    // SAFETY: a valid itimerval; the old value is not wanted.
    if unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A timer that sends SIGALRM to the calling thread alone (a process-wide timer's signal may
/// go to any thread, and leave a waiting one blocked), deleted on drop.
struct Timer(libc::timer_t);

impl Timer {
    /// SIGALRM to this thread after `value`, then every `interval`.
    fn set(value: Duration, interval: Duration) -> io::Result<Timer> {
        // SAFETY: sigevent is plain data, zeroed then filled; timer_create writes the id.
        let id = unsafe {
            let mut ev: libc::sigevent = std::mem::zeroed();
            ev.sigev_notify = libc::SIGEV_THREAD_ID;
            ev.sigev_signo = libc::SIGALRM;
            ev.sigev_notify_thread_id = libc::gettid();
            let mut id: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) != 0 {
                return Err(io::Error::last_os_error());
            }
            id
        };
        let timer = Timer(id);
        let ts = |d: Duration| libc::timespec {
            tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(d.subsec_nanos()),
        };
        let spec = libc::itimerspec {
            it_interval: ts(interval),
            // A zero value would disarm it.
            it_value: ts(value.max(Duration::from_nanos(1))),
        };
        // SAFETY: a timer we created, and a valid itimerspec; the old value is not wanted.
        if unsafe { libc::timer_settime(timer.0, 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(timer)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: deletes the timer created in `set`, once.
        unsafe {
            libc::timer_delete(self.0);
        }
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
            wait_timeout(&b, false, Duration::from_millis(30)),
            Ok(false)
        ));
        // The holder is this very process, which did not pass the lock down: waiting for it
        // would never end, and is refused at once.
        let e = take(&b, false, None).err();
        assert_eq!(e.map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
        assert!(unlock(&a).is_ok());
        assert!(matches!(try_lock(&b, true), Ok(true)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_timed_wait_on_another_thread_ends_at_its_deadline() {
        // The timer must interrupt the waiting thread itself: a process-wide SIGALRM may be
        // taken by any thread (here the one waiting on the channel), and the wait would then
        // last until the lock is released.
        let dir = std::env::temp_dir().join(format!("elf-core-timed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("l");
        let a = open(&path, 0o600).expect("open a");
        let b = open(&path, 0o600).expect("open b");
        assert!(matches!(try_lock(&a, true), Ok(true)));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(wait_timeout(&b, true, Duration::from_millis(50)).ok());
        });
        let got = rx.recv_timeout(Duration::from_secs(30));
        assert_eq!(
            got,
            Ok(Some(false)),
            "the timed wait did not end (deadlock)"
        );
        drop(a);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
