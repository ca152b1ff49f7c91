//! SIGINT, SIGTERM and SIGHUP.
//!
//! Two policies, chosen by the tool:
//!
//! - [`Policy::Exit`] (the record tools): the process exits at once with 128 + N. Every lock the
//!   toolkit takes is a `flock(2)` that the kernel drops on exit, an open SQLite transaction is
//!   rolled back by SQLite itself, and a file is only ever replaced by `rename(2)`, so nothing is
//!   left half-done; a leftover temporary file is cleaned by a later run.
//! - [`Policy::Forward`] (the tools that run a command): the signal is sent on to the running
//!   child (see [`set_child`]), or to its whole process group (see [`set_group`]), and
//!   remembered; the tool waits for the child and then stops.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);
static CHILD: AtomicI32 = AtomicI32::new(0);
static FORWARD: AtomicBool = AtomicBool::new(false);

/// What a tool does on SIGINT, SIGTERM or SIGHUP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Exit at once with 128 + N.
    Exit,
    /// Forward to the registered child and remember the signal.
    Forward,
}

/// The signals handled.
pub const HANDLED: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    RECEIVED.store(sig, Ordering::SeqCst);
    if FORWARD.load(Ordering::SeqCst) {
        let child = CHILD.load(Ordering::SeqCst);
        if child != 0 {
            // SAFETY: kill(2) is async-signal-safe; `child` is a pid we spawned and still wait
            // for, or minus the process group it leads.
            unsafe {
                libc::kill(child, sig);
            }
        }
    } else {
        // SAFETY: _exit(2) is async-signal-safe and skips destructors, which is intended here.
        unsafe { libc::_exit(128 + sig) }
    }
}

/// Installs the handlers. Called once by [`crate::run`].
pub fn install(policy: Policy) {
    FORWARD.store(policy == Policy::Forward, Ordering::SeqCst);
    for sig in HANDLED {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler only touches atomics
        // and calls async-signal-safe functions. No SA_RESTART, so a blocking read or wait
        // returns EINTR and the caller can look at `received()`.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            act.sa_flags = 0;
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// Registers the running child (or none) that signals are forwarded to.
///
/// A signal that arrived before the child was registered is forwarded here, so none is lost.
pub fn set_child(pid: Option<u32>) {
    register(pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0));
}

/// Registers the process group (or none) that signals are forwarded to: the group a running
/// child leads, so that everything the child started gets the signal too.
///
/// A signal that arrived before the group was registered is forwarded here, so none is lost.
pub fn set_group(pgid: Option<u32>) {
    register(
        pgid.and_then(|p| i32::try_from(p).ok())
            .filter(|&p| p > 0)
            .map_or(0, |p| -p),
    );
}

/// `target` as kill(2) takes it: a pid, minus a process group id, or 0 for none.
fn register(target: i32) {
    CHILD.store(target, Ordering::SeqCst);
    if target != 0 {
        let sig = RECEIVED.load(Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: plain kill(2) to our own child or the group it leads.
            unsafe {
                libc::kill(target, sig);
            }
        }
    }
}

/// The last signal received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}

/// Sleeps for `d` unless one of the handled signals arrives; false when interrupted.
///
/// `std::thread::sleep` resumes after a signal, which would keep a Ctrl-C waiting for the
/// whole delay.
pub fn sleep(d: std::time::Duration) -> bool {
    let mut req = libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    };
    loop {
        if received().is_some() {
            return false;
        }
        let mut rem = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: both pointers refer to live timespec values for the duration of the call.
        let r = unsafe { libc::nanosleep(&req, &mut rem) };
        if r == 0 {
            return received().is_none();
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return received().is_none();
        }
        req = rem;
    }
}

/// The handled signals (SIGINT, SIGTERM, SIGHUP) blocked until dropped; one that arrives
/// meanwhile is delivered when the mask is restored. elf-commit holds one around its
/// `index.lock`, elf-lock across the forks that start the command.
pub struct Blocked {
    old: libc::sigset_t,
}

impl Blocked {
    /// Blocks the handled signals for this thread (the whole process, for a tool that runs
    /// one thread), saving the mask they were in.
    pub fn handled() -> Blocked {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it, and
        // pthread_sigmask only reads `set` and writes `old`, both valid for the call.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in HANDLED {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            Blocked { old }
        }
    }

    /// The mask as it was before (what a child process should get back).
    pub fn previous(&self) -> &libc::sigset_t {
        &self.old
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `handled`; `self.old` is a valid sigset_t.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}
