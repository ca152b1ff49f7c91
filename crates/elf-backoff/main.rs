//! elf-backoff: run a command, retrying it with exponential backoff and jitter while it fails
//! with a retryable status.
//!
//! Standard input is read once and replayed byte for byte to every attempt; the standard output
//! of an attempt is held until its status is known and released only for the attempt that ends
//! the run, so a failed attempt's output never reaches the pipeline.

mod args;
mod spool;

use std::io::{self, Write};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use elf_core::backoff::{self, Clock, Jitter, Policy, Schedule};
use elf_core::cli::{Flag, Matches, Operands, Tool};
use elf_core::signals::{self, Policy as Signals};
use elf_core::{Error, IoContext, Result, exit, text};

use args::RetryOn;
use spool::{Input, Spool};

const FLAGS: &[Flag] = &[
    Flag::new("attempts", "Run at most N attempts in all (default 5)")
        .short('n')
        .value("N")
        .doc("Run the command at most N times in all (default 5, at least 1)."),
    Flag::new("base", "Scale of the first delay (default 100ms)")
        .value("DURATION")
        .doc("The scale of the delays: the ceiling before retry n is BASE * 2^n (default 100ms)."),
    Flag::new("max-delay", "No delay is longer (default 10s)")
        .value("DURATION")
        .doc("The cap on any single delay (default 10s)."),
    Flag::new("max-time", "Start no attempt past this total time")
        .value("DURATION")
        .doc(
            "A budget for the whole run, counted from the start of the first attempt: no new \
             attempt starts past it. When the next delay would end past the budget, elf-backoff \
             stops and exits with the last attempt's status.",
        ),
    Flag::new("jitter", "full, equal, decorrelated or none (default full)")
        .value("KIND")
        .choices(Jitter::NAMES)
        .doc(
            "How delays are randomised, with the formulas of the AWS \"Exponential Backoff and \
             Jitter\" analysis; t = min(MAX-DELAY, BASE * 2^n). full: random in [0, t]. equal: \
             t/2 + random in [0, t/2]. decorrelated: min(MAX-DELAY, random in [BASE, 3 * \
             previous delay]). none: exactly t. Default full.",
        ),
    Flag::new("retry-on", "Exit statuses to retry (default 75)")
        .value("LIST")
        .doc(
            "The exit statuses that make elf-backoff retry: a comma-separated list of numbers and \
             ranges such as 75 or 1-3,75, or any (every non-zero status). A command killed by \
             signal N has status 128+N. Default 75 (EX_TEMPFAIL), the status the toolkit uses \
             for \"busy, try again\".",
        ),
    Flag::new("seed", "Seed the jitter for reproducible delays")
        .value("N")
        .doc("Seed the random delays with N (an unsigned integer), so that a run is reproducible."),
    Flag::new("schedule", "Print the delays as JSON lines; run nothing").doc(
        "Print the delays the policy would sleep, one JSON object per line \
         ({\"attempt\":2,\"delay_ms\":87} is the pause before attempt 2), and run nothing. \
         --max-time ends the schedule as if every attempt took no time. A shell loop can use \
         this to follow the same policy.",
    ),
    Flag::new("stream", "Pass each attempt's output through live").doc(
        "Pass the command's standard output through as it is written, instead of holding it \
         until the attempt's status is known. Then a failed attempt's partial output reaches \
         the reader, and a retry may write the same output again: use it only when the reader \
         can cope with duplicates or the command writes nothing before it can fail.",
    ),
    Flag::new("quiet", "Do not announce retries")
        .short('q')
        .doc(
            "Do not announce retries on standard error. Errors of elf-backoff itself are still \
         printed.",
        ),
];

static TOOL: Tool = Tool {
    name: "elf-backoff",
    about: "Run a command, retrying it with exponential backoff and jitter while it fails with a retryable status",
    usage: &["[OPTIONS] [--] COMMAND [ARGS...]", "--schedule [OPTIONS]"],
    flags: FLAGS,
    operands: Operands::StopAtFirst,
    operand_kind: "command",
    man: include_str!("elf-backoff.1.in"),
    version: env!("CARGO_PKG_VERSION"),
};

fn main() -> ExitCode {
    elf_core::run(&TOOL, Signals::Forward, run)
}

#[derive(Debug)]
struct Options {
    attempts: u32,
    policy: Policy,
    max_time: Option<Duration>,
    retry_on: RetryOn,
    seed: Option<u64>,
    schedule: bool,
    stream: bool,
    quiet: bool,
    command: Vec<std::ffi::OsString>,
}

fn options(m: Matches) -> Result<Options> {
    let mut o = Options {
        attempts: 5,
        policy: Policy::default(),
        max_time: None,
        retry_on: RetryOn::List(vec![(75, 75)]),
        seed: None,
        schedule: false,
        stream: false,
        quiet: false,
        command: m.operands,
    };
    for g in &m.flags {
        match g.name() {
            "attempts" => {
                o.attempts = g.with(|s| match s.parse::<u32>() {
                    Ok(n) if n >= 1 => Ok(n),
                    _ => Err("expected a whole number of at least 1"),
                })?;
            }
            "base" => o.policy.base = g.with(args::delay)?,
            "max-delay" => o.policy.max_delay = g.with(args::delay)?,
            "max-time" => o.max_time = Some(g.with(backoff::parse_duration)?),
            "jitter" => {
                o.policy.jitter = g.with(|s| Jitter::from_name(s).ok_or("unknown jitter kind"))?;
            }
            "retry-on" => o.retry_on = g.with(RetryOn::parse)?,
            "seed" => o.seed = Some(g.parse::<u64>()?),
            "schedule" => o.schedule = true,
            "stream" => o.stream = true,
            "quiet" => o.quiet = true,
            other => return Err(Error::internal(format!("flag --{other} has no handler"))),
        }
    }
    if o.schedule && !o.command.is_empty() {
        return Err(Error::usage("--schedule runs nothing; give no command"));
    }
    if !o.schedule && o.command.is_empty() {
        return Err(Error::usage(
            "no command given (usage: elf-backoff [OPTIONS] -- COMMAND [ARGS...])",
        ));
    }
    Ok(o)
}

fn run(m: Matches) -> Result<u8> {
    let o = options(m)?;
    let mut clock = backoff::clock_from_env();
    if o.schedule {
        return print_schedule(&o, clock.as_mut());
    }
    let input = Input::capture().ctx("reading standard input")?;
    let mut schedule = Schedule::new(o.policy, o.seed);
    let mut attempt = 1;
    loop {
        if let Some(sig) = signals::received() {
            return Err(Error::signal(sig));
        }
        let (status, output) = run_attempt(&o, &input)?;
        let code = status_code(status);
        let stopped_by_signal = signals::received().is_some();
        let retry = !stopped_by_signal && o.retry_on.matches(code) && attempt < o.attempts;
        let delay = if retry {
            Some(schedule.next_delay())
        } else {
            None
        };
        let within_budget = match (delay, o.max_time) {
            (Some(d), Some(max)) => clock.elapsed().saturating_add(d) < max,
            _ => true,
        };
        if !(retry && within_budget) {
            if let Some(out) = output {
                out.copy_to(&mut io::stdout().lock())
                    .ctx("writing output")?;
            }
            if retry && !o.quiet {
                elf_core::note(format_args!(
                    "attempt {attempt}/{} exited with status {code}; giving up: the next attempt would start past --max-time",
                    o.attempts
                ));
            }
            return Ok(u8::try_from(code).unwrap_or(exit::SOFTWARE));
        }
        let delay = delay.unwrap_or_default();
        if !o.quiet {
            elf_core::note(format_args!(
                "attempt {attempt}/{} exited with status {code}; retrying in {}",
                o.attempts,
                show(delay)
            ));
        }
        drop(output);
        if !sleep(clock.as_mut(), delay) {
            let sig = signals::received().unwrap_or(libc::SIGINT);
            return Err(Error::signal(sig));
        }
        attempt += 1;
    }
}

/// Sleeps on the clock; false when a signal cut the sleep short.
fn sleep(clock: &mut dyn Clock, d: Duration) -> bool {
    if std::env::var_os("ELF_FAKE_CLOCK").is_some_and(|v| v == "1") {
        clock.sleep(d);
        return signals::received().is_none();
    }
    signals::sleep(d)
}

fn show(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

fn print_schedule(o: &Options, clock: &mut dyn Clock) -> Result<u8> {
    let mut schedule = Schedule::new(o.policy, o.seed);
    let mut elapsed = Duration::ZERO;
    let mut out = io::stdout().lock();
    let _ = clock;
    for attempt in 2..=o.attempts {
        let d = schedule.next_delay();
        elapsed = elapsed.saturating_add(d);
        if o.max_time.is_some_and(|max| elapsed >= max) {
            break;
        }
        writeln!(
            out,
            "{{\"attempt\":{attempt},\"delay_ms\":{}}}",
            d.as_millis()
        )
        .ctx("writing output")?;
    }
    out.flush().ctx("writing output")?;
    Ok(exit::OK)
}

/// The status as a shell reports it: the exit code, or 128+N when killed by signal N.
fn status_code(status: ExitStatus) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => u32::try_from(c).unwrap_or(1),
        (None, Some(sig)) => 128 + u32::try_from(sig).unwrap_or(0),
        _ => 1,
    }
}

/// Runs one attempt; returns its status and, unless streaming, its held output.
fn run_attempt(o: &Options, input: &Input) -> Result<(ExitStatus, Option<Spool>)> {
    let mut cmd = Command::new(&o.command[0]);
    cmd.args(&o.command[1..]);
    let feeder = input.attach(&mut cmd).ctx("preparing standard input")?;
    let held = if o.stream {
        None
    } else {
        let (spool, out) = Spool::for_output().ctx("making a file to hold the output")?;
        cmd.stdout(Stdio::from(out));
        Some(spool)
    };
    let mut child = cmd.spawn().map_err(|e| {
        let name = text::escape(&o.command[0].to_string_lossy()).into_owned();
        let code = if e.kind() == io::ErrorKind::NotFound {
            127
        } else {
            126
        };
        Error::new(code, format!("cannot run {name}: {}", short_io(&e)))
    })?;
    // Our copy of the child's stdout descriptor went with `cmd`'s Stdio at spawn.
    drop(cmd);
    signals::set_child(Some(child.id()));
    let writer = feeder.map(|f| f.start(&mut child));
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("waiting for the command", &e)),
        }
    };
    signals::set_child(None);
    if let Some(w) = writer {
        let _ = w.join();
    }
    let output = held;
    Ok((status, output))
}

fn short_io(e: &io::Error) -> String {
    let t = e.to_string();
    match t.rfind(" (os error ") {
        Some(i) => t[..i].to_string(),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_table_is_valid() {
        assert_eq!(elf_core::cli::check_table(&TOOL), Ok(()));
    }
}
