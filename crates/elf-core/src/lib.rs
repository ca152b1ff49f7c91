//! The one library of elf-tools: the record protocol, exit statuses and errors, the flag table
//! driver, the man page and completion generators, signal policy, the backoff policy and the
//! file and path primitives every tool shares.
//!
//! Every tool's `main` is one call to [`run`].

pub mod backoff;
pub mod cli;
pub mod docs;
pub mod exit;
pub mod held;
pub mod lockfile;
pub mod marker;
pub mod paths;
pub mod process;
pub mod record;
pub mod refs;
pub mod signals;
pub mod text;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;

pub use exit::{Error, IoContext, Result};

static TOOL_NAME: OnceLock<&'static str> = OnceLock::new();

/// The running tool's name ("elf-tools" before [`run`] sets it).
pub fn tool_name() -> &'static str {
    TOOL_NAME.get().copied().unwrap_or("elf-tools")
}

/// Prints `tool: warning: message` on stderr, with control characters escaped.
pub fn warn(message: impl std::fmt::Display) {
    let msg = message.to_string();
    diagnostic(format!(
        "{}: warning: {}\n",
        tool_name(),
        text::escape(&msg)
    ));
}

/// Prints `tool: message` on stderr, with control characters escaped.
pub fn note(message: impl std::fmt::Display) {
    let msg = message.to_string();
    diagnostic(format!("{}: {}\n", tool_name(), text::escape(&msg)));
}

/// Writes a whole diagnostic line with one write(2): the stages of a pipeline share one
/// stderr, and a line written in pieces (as `writeln!` on the unbuffered stderr does) gets
/// another stage's line spliced into it.
fn diagnostic(line: String) {
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The `main` of every tool: installs the signal policy, parses the arguments against the
/// tool's flag table, answers `--help`, `--version` and `--generate`, runs `body`, and turns
/// its result into the exit status.
///
/// Exit policy, in one place:
/// - an error prints `tool: message` (one line, control characters escaped) and exits with
///   the error's code;
/// - a broken pipe (the reader of our output went away) prints nothing and exits 141, the status
///   of a process killed by SIGPIPE: the work not passed on was not done, and a pipeline under
///   `set -o pipefail` must not take it for success. Locks are released and transactions rolled
///   back first, because the error returns through every destructor on its way here.
pub fn run(
    tool: &'static cli::Tool,
    policy: signals::Policy,
    body: fn(cli::Matches) -> Result<u8>,
) -> ExitCode {
    ExitCode::from(run_status(tool, policy, body))
}

/// [`run`], returning the exit status as a number (for a `main` that exits by itself).
pub fn run_status(
    tool: &'static cli::Tool,
    policy: signals::Policy,
    body: fn(cli::Matches) -> Result<u8>,
) -> u8 {
    let _ = TOOL_NAME.set(tool.name);
    signals::install(policy);
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match cli::parse(tool, args) {
        Ok(cli::Parsed::Help(long)) => print_out(&cli::help(tool, long)),
        Ok(cli::Parsed::Version) => print_out(&format!("{} {}\n", tool.name, tool.version)),
        Ok(cli::Parsed::Generate(kind)) => print_out(&docs::generate(tool, kind)),
        Ok(cli::Parsed::Run(m)) => match body(m) {
            Ok(code) => code,
            Err(e) => report(&e),
        },
        Err(e) => report(&e),
    }
}

fn print_out(s: &str) -> u8 {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) => report(&Error::io("writing output", &e)),
    }
}

/// Prints an error as the tool's diagnostic and returns its exit status.
pub fn report(e: &Error) -> u8 {
    if e.is_broken_pipe() {
        return exit::BROKEN_PIPE;
    }
    // Interrupted by SIGINT, SIGTERM or SIGHUP: silent, as a process killed by it would be.
    if e.code() > 128 && e.message().starts_with("interrupted by signal") {
        return e.code();
    }
    note(e);
    e.code()
}
