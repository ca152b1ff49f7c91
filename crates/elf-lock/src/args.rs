//! The arguments: the flags read into [`Options`] (one exhaustive `match` on the flag table's
//! names) and the operands split into lock files and the command, in every form flock(1)
//! accepts.

use std::ffi::OsString;
use std::time::Duration;

use elf_core::cli::Matches;
use elf_core::{Error, Result, exit};

use crate::acquire::Wait;

/// The shell `-c STRING` runs with.
pub const SHELL: &str = "/bin/sh";

#[derive(Debug)]
pub struct Options {
    pub exclusive: bool,
    pub wait: Wait,
    pub conflict: u8,
    pub close: bool,
    pub no_fork: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub mode: u32,
    pub dirs: Vec<OsString>,
    pub stale_after: Duration,
    pub status: bool,
    pub unlock: bool,
    /// flock(1)'s descriptor form: lock this inherited descriptor and exit.
    pub fd: Option<i32>,
    pub files: Vec<OsString>,
    pub command: Vec<OsString>,
}

/// A duration as every tool reads one (`0.5`, `500ms`, `2s`, `1m`; a bare number is
/// seconds), at most 1e9 seconds.
pub fn seconds(s: &str) -> std::result::Result<Duration, String> {
    match elf_core::backoff::parse_duration(s) {
        Ok(d) if d <= Duration::from_secs(1_000_000_000) => Ok(d),
        Ok(_) => Err("expected at most 1e9 seconds".to_string()),
        Err(e) => Err(e),
    }
}

pub fn options(m: Matches) -> Result<Options> {
    let mut o = Options {
        exclusive: true,
        wait: Wait::Forever,
        conflict: exit::TEMPFAIL,
        close: false,
        no_fork: false,
        quiet: false,
        verbose: false,
        mode: 0o644,
        dirs: Vec::new(),
        stale_after: Duration::from_secs(300),
        status: false,
        unlock: false,
        fd: None,
        files: Vec::new(),
        command: Vec::new(),
    };
    let mut nonblock = false;
    let mut shell: Option<OsString> = None;
    for g in &m.flags {
        match g.name() {
            "shared" => o.exclusive = false,
            "exclusive" => o.exclusive = true,
            "nonblock" => nonblock = true,
            "timeout" => {
                let d = g.with(seconds)?;
                o.wait = if d.is_zero() { Wait::No } else { Wait::For(d) };
            }
            "conflict-exit-code" => {
                o.conflict = g.with(|s| {
                    s.parse::<u8>()
                        .map_err(|_| "expected a status from 0 to 255")
                })?
            }
            "close" => o.close = true,
            "no-fork" => o.no_fork = true,
            "command" => shell = Some(g.os()?.to_os_string()),
            "mode" => {
                o.mode = g.with(|s| match u32::from_str_radix(s, 8) {
                    Ok(n) if n <= 0o7777 => Ok(n),
                    _ => Err("expected octal permissions such as 0644"),
                })?;
            }
            "mkdir" => o.dirs.push(g.os()?.to_os_string()),
            "stale-after" => {
                o.stale_after = g.with(|s| match seconds(s) {
                    Ok(d) if !d.is_zero() => Ok(d),
                    _ => Err("expected a number of seconds more than 0"),
                })?;
            }
            "status" => o.status = true,
            "unlock" => o.unlock = true,
            "quiet" => o.quiet = true,
            "verbose" => o.verbose = true,
            _ => return Err(g.unhandled()),
        }
    }
    if nonblock {
        o.wait = Wait::No;
    }
    if let [one] = m.operands.as_slice() {
        let digits = one
            .to_str()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
        if let (Some(n), None, true, false) = (digits, &shell, o.dirs.is_empty(), o.status) {
            // A lone number is a descriptor, as with flock(1): `exec 9>L; elf-lock -n 9`.
            let fd = n
                .parse::<i32>()
                .map_err(|_| Error::usage(format!("descriptor {n} is out of range")))?;
            o.fd = Some(fd);
            if o.no_fork || o.close {
                return Err(Error::usage(
                    "-F and -o need a command; the descriptor form runs none",
                ));
            }
            return Ok(o);
        }
    }
    if o.unlock {
        return Err(Error::usage(
            "-u releases the lock on a descriptor: elf-lock -u FD",
        ));
    }
    let (files, command) = operands(m.operands, shell, !o.dirs.is_empty(), o.status)?;
    o.files = files;
    o.command = command;
    if o.status {
        return Ok(o);
    }
    if o.no_fork && (o.close || !o.dirs.is_empty()) {
        return Err(Error::usage(
            "-F cannot be combined with -o or --mkdir, which need elf-lock to stay",
        ));
    }
    if !o.exclusive && !o.dirs.is_empty() {
        return Err(Error::usage(
            "--mkdir locks are always exclusive; -s cannot apply to them",
        ));
    }
    Ok(o)
}

/// Splits the operands into lock files and the command.
///
/// 1. With `--` among them: lock files before it, the command after it.
/// 2. Else with `-c STRING` given before them: all are lock files.
/// 3. Else with `--mkdir`: all are the command.
/// 4. Else flock(1)'s forms: `LOCKFILE -c STRING` or `LOCKFILE COMMAND [ARGS...]`.
pub fn operands(
    ops: Vec<OsString>,
    shell: Option<OsString>,
    mkdir: bool,
    status: bool,
) -> Result<(Vec<OsString>, Vec<OsString>)> {
    let sh = |s: OsString| vec![OsString::from(SHELL), OsString::from("-c"), s];
    if status {
        if shell.is_some() {
            return Err(Error::usage("--status runs nothing; -c cannot be given"));
        }
        let files: Vec<OsString> = ops.into_iter().filter(|o| o != "--").collect();
        if files.is_empty() && !mkdir {
            return Err(Error::usage("--status needs a LOCKFILE or --mkdir DIR"));
        }
        return Ok((files, Vec::new()));
    }
    let (files, command) = if let Some(i) = ops.iter().position(|o| o == "--") {
        let mut files = ops;
        let command = files.split_off(i + 1);
        files.pop();
        match shell {
            Some(_) if !command.is_empty() => {
                return Err(Error::usage(
                    "both -c STRING and a command after -- were given",
                ));
            }
            Some(s) => (files, sh(s)),
            None => (files, command),
        }
    } else if let Some(s) = shell {
        (ops, sh(s))
    } else if mkdir {
        (Vec::new(), ops)
    } else {
        let mut it = ops.into_iter();
        let files: Vec<OsString> = it.next().into_iter().collect();
        let rest: Vec<OsString> = it.collect();
        let command = match rest.first().and_then(|a| a.to_str()) {
            Some("-c" | "--command") => {
                if rest.len() != 2 {
                    return Err(Error::usage("LOCKFILE -c takes exactly one STRING"));
                }
                sh(rest[1].clone())
            }
            Some(a) if a.starts_with("--command=") && rest.len() == 1 => {
                sh(OsString::from(&a["--command=".len()..]))
            }
            _ => rest,
        };
        (files, command)
    };
    if files.is_empty() && !mkdir {
        return Err(Error::usage(
            "no lock file given (usage: elf-lock [OPTIONS] LOCKFILE... -- COMMAND [ARGS...])",
        ));
    }
    if command.is_empty() {
        return Err(Error::usage(
            "no command given (usage: elf-lock [OPTIONS] LOCKFILE... -- COMMAND [ARGS...])",
        ));
    }
    Ok((files, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(
        ops: &[&str],
        shell: Option<&str>,
        mkdir: bool,
    ) -> std::result::Result<(Vec<String>, Vec<String>), u8> {
        let v = |x: Vec<OsString>| {
            x.into_iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        operands(
            ops.iter().map(OsString::from).collect(),
            shell.map(OsString::from),
            mkdir,
            false,
        )
        .map(|(f, c)| (v(f), v(c)))
        .map_err(|e| e.code())
    }

    #[test]
    fn operand_forms() {
        let ok = |f: &[&str], c: &[&str]| {
            Ok((
                f.iter().map(|s| s.to_string()).collect(),
                c.iter().map(|s| s.to_string()).collect(),
            ))
        };
        assert_eq!(
            split(&["a", "b", "--", "make", "-j2"], None, false),
            ok(&["a", "b"], &["make", "-j2"])
        );
        assert_eq!(
            split(&["L", "make", "-j2"], None, false),
            ok(&["L"], &["make", "-j2"])
        );
        assert_eq!(
            split(&["L", "-c", "echo hi"], None, false),
            ok(&["L"], &["/bin/sh", "-c", "echo hi"])
        );
        assert_eq!(
            split(&["L", "--command=x"], None, false),
            ok(&["L"], &["/bin/sh", "-c", "x"])
        );
        assert_eq!(
            split(&["a", "b"], Some("x"), false),
            ok(&["a", "b"], &["/bin/sh", "-c", "x"])
        );
        assert_eq!(
            split(&["a", "--"], Some("x"), false),
            ok(&["a"], &["/bin/sh", "-c", "x"])
        );
        assert_eq!(
            split(&["make", "-j2"], None, true),
            ok(&[], &["make", "-j2"])
        );
        assert_eq!(
            split(&["--", "cmd", "--", "x"], None, true),
            ok(&[], &["cmd", "--", "x"])
        );
        assert_eq!(
            split(&["L", "--", "grep", "--", "p"], None, false),
            ok(&["L"], &["grep", "--", "p"])
        );
        assert_eq!(split(&["L"], None, false), Err(64));
        assert_eq!(split(&["L", "--"], None, false), Err(64));
        assert_eq!(split(&["--", "cmd"], None, false), Err(64));
        assert_eq!(split(&["L", "-c"], None, false), Err(64));
        assert_eq!(split(&["L", "-c", "a", "b"], None, false), Err(64));
        assert_eq!(split(&["a", "--", "b"], Some("x"), false), Err(64));
        assert_eq!(split(&[], None, false), Err(64));
    }

    #[test]
    fn seconds_are_checked() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(seconds("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "nan", "inf", "1e10", "x", "", "2000000000"] {
            assert!(seconds(bad).is_err(), "{bad:?} accepted");
        }
    }
}
