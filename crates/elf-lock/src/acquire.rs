//! Taking `flock(2)` locks: at once, never, or before a deadline.
//!
//! A wait is a blocking `flock(2)`, so the kernel hands the lock over the moment it is free.
//! A deadline (and the one-second "who holds it" notice) is an interval timer whose SIGALRM
//! interrupts the call (the handler is installed without `SA_RESTART`). The timer keeps firing
//! every millisecond after it first expires, so a signal that lands between the deadline check
//! and the call cannot leave the call blocked: at worst the wait ends a millisecond late.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use elf_core::held::{self, Enclosing};
use elf_core::lockfile::{install_alarm_handler, set_timer};
use elf_core::signals;
use elf_core::{Error, Result};

/// How long to wait for a lock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wait {
    /// As long as it takes.
    Forever,
    /// Not at all (`-n`, `-w 0`).
    No,
    /// Until this long after the start.
    For(Duration),
}

/// When the wait started, when it ends, and whether the notice is still due.
pub struct Clock {
    start: Instant,
    deadline: Option<Instant>,
    notice_at: Option<Instant>,
    armed: bool,
}

/// After this long waiting, say who holds the lock.
pub const NOTICE_AFTER: Duration = Duration::from_secs(1);

/// After this long waiting (at once when ELF_LOCK_HELD is set, or for -n), ask whether our own
/// ancestry holds the lock ([`held::enclosing`]).
pub const ANCESTRY_AFTER: Duration = Duration::from_millis(20);

impl Clock {
    pub fn new(wait: Wait, notice: bool) -> Clock {
        let start = Instant::now();
        Clock {
            start,
            deadline: match wait {
                Wait::For(d) => start.checked_add(d),
                _ => None,
            },
            notice_at: if notice {
                start.checked_add(NOTICE_AFTER)
            } else {
                None
            },
            armed: false,
        }
    }

    /// Time spent since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Time left before the deadline, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Returns true once, when notices are wanted and none was given yet: the notice is given
    /// now, not when it would have become due.
    pub fn notice_now(&mut self) -> bool {
        self.notice_at.take().is_some()
    }

    /// Returns true once, when the notice has become due.
    pub fn notice_due(&mut self) -> bool {
        match self.notice_at {
            Some(t) if Instant::now() >= t => {
                self.notice_at = None;
                true
            }
            _ => false,
        }
    }

    /// The next moment something must happen (notice or deadline).
    fn next_event(&self) -> Option<Instant> {
        match (self.deadline, self.notice_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Arms the timer for the next event (or `also`, when sooner), or disarms it when there is
    /// none.
    fn arm(&mut self, also: Option<Instant>) -> io::Result<()> {
        let next = match (self.next_event(), also) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            Some(t) => {
                install_alarm_handler();
                let left = t
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_micros(1));
                set_timer(left, Duration::from_millis(1))?;
                self.armed = true;
            }
            None => self.disarm(),
        }
        Ok(())
    }

    /// Stops the timer.
    pub fn disarm(&mut self) {
        if self.armed {
            let _ = set_timer(Duration::ZERO, Duration::ZERO);
            self.armed = false;
        }
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// How one lock attempt ended.
pub enum Got {
    Yes,
    /// An enclosing elf-lock holds it for this process tree and passed it down
    /// (`ELF_LOCK_HELD`, see `elf_core::held`): it counts as held, and was not taken.
    Enclosed,
    /// Held by someone else past the wait allowed.
    No,
    /// Held by our own ancestry in a way this request cannot re-enter: waiting would never
    /// end. Why, for the message.
    Ancestor(String),
}

/// Takes the lock on `file`, waiting as `wait` says on `clock`. `notice` is called once if the
/// wait passes the notice time, with why when there is more to say than who holds it. A lock
/// held by our own ancestry is not waited for when it would never be released: it counts as
/// held when passed down, and is reported at once when not; another ancestor's hold is waited
/// for, and the notice says so at once.
pub fn lock(
    file: &File,
    exclusive: bool,
    wait: Wait,
    clock: &mut Clock,
    notice: &mut dyn FnMut(Option<&str>),
) -> Result<Got> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    match flock(file, op | libc::LOCK_NB) {
        Ok(()) => return Ok(Got::Yes),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
        Err(e) => return Err(interrupted_or(e)),
    }
    // Whether our own ancestry holds it: at once when a holder passed locks down
    // (ELF_LOCK_HELD) or no wait is allowed; otherwise after a short first wait, so that the
    // common contention (another process, released within milliseconds) costs no reading of
    // /proc.
    let mut check_at = if wait == Wait::No || std::env::var_os(held::VAR).is_some() {
        Some(Instant::now())
    } else {
        Instant::now().checked_add(ANCESTRY_AFTER)
    };
    loop {
        if check_at.is_some_and(|t| Instant::now() >= t) {
            check_at = None;
            match held::enclosing(file, exclusive) {
                Enclosing::Held => return Ok(Got::Enclosed),
                Enclosing::Deadlock(why) => return Ok(Got::Ancestor(why)),
                Enclosing::Ancestor(why) => {
                    if wait != Wait::No && clock.notice_now() {
                        notice(Some(&why));
                    }
                }
                Enclosing::No => {}
            }
            if wait == Wait::No {
                return Ok(Got::No);
            }
        }
        if let Some(sig) = signals::received() {
            return Err(Error::signal(sig));
        }
        if clock.expired() {
            return Ok(Got::No);
        }
        if clock.notice_due() {
            notice(None);
        }
        clock
            .arm(check_at)
            .map_err(|e| Error::io("setting the lock timer", &e))?;
        match flock(file, op) {
            Ok(()) => return Ok(Got::Yes),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(interrupted_or(e)),
        }
    }
}

fn interrupted_or(e: io::Error) -> Error {
    match signals::received() {
        Some(sig) => Error::signal(sig),
        None => Error::io("locking", &e),
    }
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock(2) on a descriptor we own for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sleeps up to `d`, cut short by a signal (the caller checks what it was).
pub fn nap(d: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    };
    // SAFETY: a valid timespec; the remainder is not wanted.
    unsafe {
        libc::nanosleep(&ts, std::ptr::null_mut());
    }
}
