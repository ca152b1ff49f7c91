//! Exit statuses and the one error type every tool returns.
//!
//! The codes are the `sysexits.h` values, so that a retryable failure (75) never shares a code
//! with a permanent one. [`TABLE`] is the single source for the README, the man pages and
//! `--help`.

use std::fmt;
use std::io;

/// Success.
pub const OK: u8 = 0;
/// A definite "no" where a tool answers a question.
pub const NO: u8 = 1;
/// Usage error (`EX_USAGE`).
pub const USAGE: u8 = 64;
/// Bad input record (`EX_DATAERR`).
pub const DATAERR: u8 = 65;
/// A named input file is missing (`EX_NOINPUT`).
pub const NOINPUT: u8 = 66;
/// A repository or service the tool cannot work with, a permanent failure (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// Internal error (`EX_SOFTWARE`).
pub const SOFTWARE: u8 = 70;
/// I/O error, disk full included (`EX_IOERR`).
pub const IOERR: u8 = 74;
/// Temporary failure; the only code `elf-backoff` retries by default (`EX_TEMPFAIL`).
pub const TEMPFAIL: u8 = 75;
/// Permission denied (`EX_NOPERM`).
pub const NOPERM: u8 = 77;
/// The status of a process whose output pipe was closed (128 + SIGPIPE).
pub const BROKEN_PIPE: u8 = 141;

/// The exit status table shared by all five tools.
pub const TABLE: &[(&str, &str)] = &[
    ("0", "success"),
    (
        "1",
        "a definite \"no\" where a tool answers a question (for example, differences were found)",
    ),
    (
        "64",
        "usage error: an unknown flag, a bad flag value, a missing argument",
    ),
    (
        "65",
        "bad input record: malformed JSON, a wrong type, a path outside the root; the message names the line",
    ),
    ("66", "a named input file is missing"),
    (
        "69",
        "unavailable: a repository or a remote the tool cannot work with; permanent, not retried",
    ),
    ("70", "internal error"),
    ("74", "I/O error, disk full included"),
    (
        "75",
        "temporary failure: a lock not obtained in time, a database busy past its timeout, a git index locked; safe to retry",
    ),
    (
        "77",
        "permission denied, or a path or symlink refused for safety",
    ),
    (
        "128+N",
        "killed by signal N (130 for SIGINT); for a tool that runs a command, that command was killed by signal N",
    ),
    (
        "141",
        "the output pipe was closed by the reader; nothing more was done",
    ),
];

/// The statuses every tool can exit with, whatever it does: success, a usage error, an
/// internal error, an I/O error (writing its output), a signal, a closed output pipe.
pub const SHARED: &[&str] = &["0", "64", "70", "74", "128+N", "141"];

/// The meaning of `--keep-going`, the same in every tool that has it (the flag's text in
/// `--help` and the man pages).
#[macro_export]
macro_rules! keep_going_doc {
    () => {
        "A record that fails is passed on with an \"error\" key (tool, code, message, line), \
         its reason printed on standard error, and the next record is processed; later stages \
         pass it on untouched and elf-db done counts it as a failed attempt. The exit status \
         is 0 when every failure became an error record: the failures travel in the records, \
         so a pipeline under set -o pipefail goes on to its last stage. A failure that \
         concerns no single record stops the run with its own status, as without the flag."
    };
}

/// An error that knows the exit status it stands for.
///
/// Its `Display` is one line: `line N: message` when it concerns an input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: u8,
    line: Option<u64>,
    message: String,
    /// The OS error number, for an error made by [`Error::io`] from one.
    os: Option<i32>,
}

/// The result type of every fallible function in the toolkit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with the given exit status.
    pub fn new(code: u8, message: impl Into<String>) -> Error {
        Error {
            code,
            line: None,
            message: message.into(),
            os: None,
        }
    }
    /// Exit 64.
    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(USAGE, message)
    }
    /// Exit 65.
    pub fn data(message: impl Into<String>) -> Error {
        Error::new(DATAERR, message)
    }
    /// Exit 66.
    pub fn no_input(message: impl Into<String>) -> Error {
        Error::new(NOINPUT, message)
    }
    /// Exit 70.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(SOFTWARE, message)
    }
    /// Exit 74.
    pub fn io_failure(message: impl Into<String>) -> Error {
        Error::new(IOERR, message)
    }
    /// Exit 75.
    pub fn temporary(message: impl Into<String>) -> Error {
        Error::new(TEMPFAIL, message)
    }
    /// Exit 77.
    pub fn permission(message: impl Into<String>) -> Error {
        Error::new(NOPERM, message)
    }
    /// The reader of our output went away (exit 141, printed by nobody).
    pub fn broken_pipe() -> Error {
        Error::new(BROKEN_PIPE, "broken pipe")
    }
    /// Interrupted by signal `sig` (exit 128 + sig).
    pub fn signal(sig: i32) -> Error {
        let code = u8::try_from(128 + sig.clamp(1, 127)).unwrap_or(SOFTWARE);
        Error::new(code, format!("interrupted by signal {sig}"))
    }

    /// An I/O error with what was being done, its exit status chosen from its kind:
    /// disk full, quota and file too large give 74; permission denied 77; a missing file 66;
    /// a would-block or timeout 75; a broken pipe 141.
    pub fn io(context: impl fmt::Display, err: &io::Error) -> Error {
        let code = io_code(err);
        if code == BROKEN_PIPE {
            return Error::broken_pipe();
        }
        let mut e = Error::new(code, format!("{context}: {}", describe_io(err)));
        e.os = err.raw_os_error();
        e
    }

    /// The OS error number behind an I/O error (`EMFILE`...), when there is one.
    pub fn os_error(&self) -> Option<i32> {
        self.os
    }

    /// Attach the input line this error is about.
    #[must_use]
    pub fn at_line(mut self, line: u64) -> Error {
        self.line = Some(line);
        self
    }

    /// Prefix the message with context (`context: message`).
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The exit status.
    pub fn code(&self) -> u8 {
        self.code
    }
    /// The input line, if the error concerns one.
    pub fn line(&self) -> Option<u64> {
        self.line
    }
    /// The message without the line prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// True for exit 141.
    pub fn is_broken_pipe(&self) -> bool {
        self.code == BROKEN_PIPE
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(n) => write!(f, "line {n}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

/// The exit status an I/O error stands for.
pub fn io_code(err: &io::Error) -> u8 {
    match err.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG | libc::EROFS | libc::EIO) => {
            return IOERR;
        }
        Some(libc::EACCES | libc::EPERM) => return NOPERM,
        Some(libc::ELOOP) => return NOPERM,
        Some(libc::EPIPE) => return BROKEN_PIPE,
        Some(libc::EWOULDBLOCK | libc::ETIMEDOUT) => return TEMPFAIL,
        _ => {}
    }
    match err.kind() {
        io::ErrorKind::BrokenPipe => BROKEN_PIPE,
        io::ErrorKind::PermissionDenied => NOPERM,
        io::ErrorKind::NotFound => NOINPUT,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TEMPFAIL,
        _ => IOERR,
    }
}

/// The text of an I/O error without Rust's "(os error N)" suffix.
fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Turn `io::Result` into [`Result`] with context, naming what was being done.
pub trait IoContext<T> {
    /// Map the error with [`Error::io`].
    fn ctx(self, context: impl fmt::Display) -> Result<T>;
    /// Map the error with [`Error::io`], building the context only on failure.
    fn with_ctx<D: fmt::Display>(self, context: impl FnOnce() -> D) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(context, &e))
    }
    fn with_ctx<D: fmt::Display>(self, context: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::io(context(), &e))
    }
}

/// Walk an error chain looking for a broken pipe, including the one `serde_json` wraps.
pub fn chain_has_broken_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        if let Some(js) = e.downcast_ref::<serde_json::Error>() {
            if js.io_error_kind() == Some(io::ErrorKind::BrokenPipe) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_documented_codes() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(Error::io("writing x", &full).code(), IOERR);
        let perm = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(Error::io("opening x", &perm).code(), NOPERM);
        let missing = io::Error::from_raw_os_error(libc::ENOENT);
        let e = Error::io("opening x", &missing);
        assert_eq!(e.code(), NOINPUT);
        assert_eq!(e.to_string(), "opening x: No such file or directory");
        let pipe = io::Error::from_raw_os_error(libc::EPIPE);
        assert!(Error::io("writing", &pipe).is_broken_pipe());
    }

    #[test]
    fn line_prefix_and_context() {
        let e = Error::data("not an object").at_line(7).context("record");
        assert_eq!(e.to_string(), "line 7: record: not an object");
        assert_eq!(e.code(), DATAERR);
        assert_eq!(Error::signal(2).code(), 130);
    }

    #[test]
    fn broken_pipe_found_inside_serde_json() {
        let io = io::Error::from(io::ErrorKind::BrokenPipe);
        let js = serde_json::Error::io(io);
        assert!(chain_has_broken_pipe(&js));
        let other = serde_json::Error::io(io::Error::other("x"));
        assert!(!chain_has_broken_pipe(&other));
    }
}
