//! elf-backoff: run a command, retrying it with exponential backoff and jitter while it fails
//! with a retryable status.
//!
//! Standard input is read once and replayed byte for byte to every attempt; the standard output
//! of an attempt is held until its status is known and released only for the attempt that ends
//! the run, so a failed attempt's output never reaches the pipeline. What is held is bounded
//! (`--hold`): past it the output is passed on as it comes and that attempt ends the run.

pub mod args;
mod hold;
mod spool;

use std::io::{self, Write};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use elf_core::backoff::{self, Clock, Jitter, Policy, Schedule};
use elf_core::cli::{Flag, Kind, Matches, Operand, Operands, Tool};
use elf_core::signals::{self, Policy as Signals};
use elf_core::{Error, IoContext, Result, exit, text};

use args::RetryOn;
use hold::Output;
use spool::Input;

/// `--hold`'s default: 8 MiB.
const DEFAULT_HOLD: u64 = 8 << 20;

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
    Flag::new("hold", "Hold at most this much output (default 8M)")
        .value("BYTES")
        .doc(
            "Hold at most BYTES of an attempt's output (a number, with K, M or G for powers of \
             1024; default 8M). Past it, what is held is written out and the rest is passed \
             through as it comes, and that attempt ends the run: it is not retried, whatever its \
             status, since its output has already reached the reader. 0 holds nothing: an \
             attempt is retried only while it has written nothing.",
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
    args: &[Operand::one(
        "COMMAND",
        Kind::Command,
        "the command to run and retry, with its arguments",
    )],
    commands: &[],
    exits: &["0", "64", "66", "70", "74", "75", "77", "128+N", "141"],
    man: include_str!("../elf-backoff.1.in"),
    version: env!("CARGO_PKG_VERSION"),
};

/// The whole program, as the `elf-backoff` binary runs it.
pub fn main() -> ExitCode {
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
    hold: Option<u64>,
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
        hold: None,
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
            "hold" => o.hold = Some(g.with(args::size)?),
            "quiet" => o.quiet = true,
            _ => return Err(g.unhandled()),
        }
    }
    if o.stream && o.hold.is_some() {
        return Err(Error::usage(
            "--hold sets how much output is held; --stream holds none",
        ));
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
        if matches!(output, Some(Output::ReaderGone)) {
            return Ok(exit::BROKEN_PIPE);
        }
        let passed_on = matches!(output, Some(Output::PassedOn));
        let stopped_by_signal = signals::received().is_some();
        // A status to retry, whether or not a retry is left.
        let failed = !stopped_by_signal && o.retry_on.matches(code);
        let retryable = failed && attempt < o.attempts;
        let retry = retryable && !passed_on;
        if retry && hold::reader_gone() {
            // Nobody reads our output any more: another attempt would be for nothing.
            return Ok(exit::BROKEN_PIPE);
        }
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
            if let Some(Output::Held(out)) = output {
                out.copy_to(&mut io::stdout().lock())
                    .ctx("writing output")?;
            }
            if failed && !o.quiet {
                let why = if !retryable {
                    format!("no attempt left (--attempts {})", o.attempts)
                } else if passed_on {
                    format!(
                        "its output grew past --hold ({}) and was passed on as it came",
                        show_size(o.hold.unwrap_or(DEFAULT_HOLD))
                    )
                } else {
                    format!(
                        "the next attempt would start past --max-time ({} in all; {} spent)",
                        show(o.max_time.unwrap_or_default()),
                        show(clock.elapsed())
                    )
                };
                elf_core::note(format_args!(
                    "attempt {attempt}/{} exited with status {code}; giving up: {why}",
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

/// Runs one attempt; returns its status and, unless streaming, what became of its output.
fn run_attempt(o: &Options, input: &Input) -> Result<(ExitStatus, Option<Output>)> {
    let mut cmd = Command::new(&o.command[0]);
    cmd.args(&o.command[1..]);
    let feeder = input.attach(&mut cmd).ctx("preparing standard input")?;
    let pipe = if o.stream {
        None
    } else {
        let (ours, theirs) = hold::pipe().ctx("making a pipe for the output")?;
        cmd.stdout(Stdio::from(theirs));
        Some(ours)
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
    // Our copy of the pipe's write end went with `cmd`'s Stdio: the command's exit (and that of
    // whatever it started) is what closes it.
    drop(cmd);
    signals::set_child(Some(child.id()));
    let writer = feeder.map(|f| f.start(&mut child));
    let result = match pipe {
        Some(p) => hold::collect(&mut child, p, o.hold.unwrap_or(DEFAULT_HOLD))
            .map(|(s, out)| (s, Some(out))),
        None => hold::wait(&mut child).map(|s| (s, None)),
    };
    signals::set_child(None);
    if let Some(w) = writer {
        let _ = w.join();
    }
    result
}

fn show_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}G", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K", n >> 10),
        n => format!("{n} bytes"),
    }
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
    fn every_flag_of_the_table_reaches_its_handler() {
        elf_core::cli::assert_every_flag_handled(&TOOL, options);
    }

    #[test]
    fn flag_table_is_valid() {
        assert_eq!(elf_core::cli::check_table(&TOOL), Ok(()));
    }
}
