//! elf-lock: hold one or more file locks while a command runs.
//!
//! `elf-lock [OPTIONS] LOCKFILE... -- COMMAND [ARGS...]`, or flock(1)'s `LOCKFILE COMMAND...`
//! and `LOCKFILE -c STRING`. Locks are `flock(2)` on lock files that are never deleted, so the
//! kernel drops them when their holder dies; several are taken in one canonical order, so two
//! callers cannot deadlock; a holder record in the lock file says who holds it, and
//! `--status` reports it only when the kernel confirms it. `--mkdir DIR` takes ELF's legacy
//! directory lock and breaks it only when its owner is provably gone.

mod acquire;
mod args;
mod child;
mod descriptor;
mod dirlock;
mod dirs;
pub mod holder;
mod lockfiles;
mod status;

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use elf_core::cli::{Flag, Kind, Matches, Operand, Operands, Tool};
use elf_core::signals::Policy as Signals;
use elf_core::{Error, Result, exit, held};

use acquire::{Clock, Got};
use args::options;
use descriptor::descriptor;
use dirs::{resolve_dirs, take_dir};
use elf_core::paths::show;
use holder::Me;
use lockfiles::{LockFile, gave_up};

const FLAGS: &[Flag] = &[
    Flag::new("shared", "Take shared locks").short('s').doc(
        "Take shared locks: any number of shared holders at once, none while an exclusive \
         holder has the lock. No holder record is written.",
    ),
    Flag::new("exclusive", "Take exclusive locks (the default)")
        .short('x')
        .doc("Take exclusive locks (the default): one holder at a time. The last of -s and -x wins."),
    Flag::new("nonblock", "Do not wait: exit 75 (or -E) at once if held")
        .short('n')
        .doc(
            "Do not wait: if a lock is held by someone else, release the ones already taken and \
             exit at once with the conflict status (75, or the -E value). Overrides -w.",
        ),
    Flag::new("timeout", "Give up after DURATION (0.5, 500ms, 2s, 1m)").short('w').value("DURATION").doc(
        "Wait at most DURATION for all the locks together, as a number of seconds (fractional, \
         for example 0.5) or with ms, s or m, as the other tools take it (500ms); then \
         release the ones already taken and exit with the conflict status. The wait is a \
         blocking flock(2) cut by a timer, so the lock is taken the instant it is free and the \
         wait ends within a millisecond of the deadline. -w 0 is -n.",
    ),
    Flag::new("conflict-exit-code", "Status when a lock is not obtained (default 75)")
        .short('E')
        .value("N")
        .doc(
            "The exit status when a lock is not obtained (-n, -w, --mkdir): 0 to 255, default 75 \
             (EX_TEMPFAIL, which elf-backoff retries), not flock(1)'s 1, which a command can \
             return too.",
        ),
    Flag::new("unlock", "Release the lock on descriptor FD").short('u').doc(
        "With flock(1)'s descriptor form, elf-lock [OPTIONS] FD: release the lock held on the \
         open file FD instead of taking it.",
    ),
    Flag::new("close", "Do not pass the locks to the command").short('o').doc(
        "Do not let the command inherit the lock descriptors. By default, as with flock(1), the \
         command and every process it starts hold the lock too: a daemon it starts keeps the \
         lock held after the command and elf-lock have exited, until the daemon exits or closes \
         the descriptor. With -o the lock is released when elf-lock exits (after the command), \
         whatever the command left running, and those processes run without the lock; should \
         elf-lock be killed, a keeper process holds the lock until it has killed the command's \
         process group (see The command).",
    ),
    Flag::new("no-fork", "Run the command in place of elf-lock (exec)").short('F').doc(
        "Replace elf-lock with the command (exec) instead of running it as a child: the command \
         keeps elf-lock's pid, so it holds the lock itself and the holder record names it. \
         Signals then reach the command directly. Not with -o or --mkdir, which need elf-lock to \
         stay.",
    ),
    Flag::new("command", "Run STRING with /bin/sh -c").short('c').value("STRING").doc(
        "Run STRING with /bin/sh -c. Given before the lock files, every operand is a lock file; \
         flock(1)'s form LOCKFILE -c STRING works too. (flock(1) uses $SHELL; elf-lock always \
         uses /bin/sh, so a script behaves the same for every user.)",
    ),
    Flag::new("mode", "Mode of created lock files (default 0644)")
        .value("MODE")
        .doc("The permissions, in octal, of a lock file elf-lock creates (default 0644, less the umask)."),
    Flag::new("mkdir", "Also hold the legacy directory lock DIR")
        .value("DIR")
        .path()
        .repeat()
        .doc(
            "Also take the legacy directory lock DIR (ELF's mkdir fallback, for example \
             .git/claude-lock.dir): created with mkdir(2), holding an owner file, removed on \
             release. An existing DIR is broken only when its owner is provably gone (see \
             LEGACY DIRECTORY LOCKS). May be repeated; with no LOCKFILE, write \
             elf-lock --mkdir DIR -- COMMAND.",
        ),
    Flag::new("stale-after", "Break an ownerless --mkdir DIR this old (default 300)")
        .value("SECONDS")
        .doc(
            "A --mkdir directory without an owner file (taken by a legacy script) is broken when \
             it is older than SECONDS (default 300, more than 0), with a warning. A directory \
             whose owner is known is never broken by age.",
        ),
    Flag::new("status", "Print who holds each lock as JSON; run nothing").doc(
        "Print one JSON line per LOCKFILE and --mkdir DIR saying whether it is held, how, and by \
         whom (see STATUS), without waiting and without creating anything; run nothing.",
    ),
    Flag::new("quiet", "Say nothing about waits and conflicts").short('q').doc(
        "Do not say on standard error who holds a lock when the wait passes one second or when \
         a lock is not obtained. Errors are still printed.",
    ),
    Flag::new("verbose", "Report the wait and the command run").short('v').doc(
        "Say on standard error how long getting the locks took and which command runs.",
    ),
];

static TOOL: Tool = Tool {
    name: "elf-lock",
    about: "Hold file locks while a command runs; locks cannot go stale or deadlock, and say who holds them",
    usage: &[
        "[OPTIONS] LOCKFILE... -- COMMAND [ARGS...]",
        "[OPTIONS] LOCKFILE COMMAND [ARGS...]",
        "[OPTIONS] LOCKFILE -c STRING",
        "[OPTIONS] --mkdir DIR [LOCKFILE...] -- COMMAND [ARGS...]",
        "[-s|-x|-u] [-n] [-w DURATION] [-E N] FD",
        "--status [--mkdir DIR] [LOCKFILE...]",
    ],
    flags: FLAGS,
    operands: Operands::StopAtFirst,
    args: &[
        Operand::one(
            "LOCKFILE",
            Kind::File,
            "the lock file (or an open descriptor FD); several before --",
        ),
        Operand::one(
            "COMMAND",
            Kind::Command,
            "the command to run under the locks, with its arguments",
        ),
    ],
    commands: &[],
    exits: &["0", "64", "66", "70", "74", "75", "77", "128+N", "141"],
    man: include_str!("../elf-lock.1.in"),
    version: env!("CARGO_PKG_VERSION"),
};

/// The whole program: `elf_core::run` after a lean start-up.
///
/// std's own start-up reads `/proc/self/maps` to place a stack guard and sets up a
/// stack-overflow handler on an alternate stack: about a tenth of a millisecond, 5% of an
/// `elf-lock L -- true`, for a program that recurses nowhere. Of what it does, two things
/// matter here and are done below: descriptors 0 to 2 are kept open (else a lock file could
/// be opened as descriptor 1 and become the command's standard output), and SIGPIPE is
/// ignored, so a closed output pipe is an error that `elf_core::run` reports (141); the
/// command gets the default disposition back, as std gives every child.
pub fn start() -> i32 {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll(2) on a valid array of three pollfd; a zero timeout only reports.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    for p in fds
        .iter()
        .filter(|p| r >= 0 && p.revents & libc::POLLNVAL != 0)
    {
        // SAFETY: open(2) of a constant path; the lowest free descriptor, p.fd, is taken.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if fd != p.fd {
            return i32::from(exit::SOFTWARE);
        }
    }
    // SAFETY: setting a signal's disposition to ignore.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    i32::from(elf_core::run_status(&TOOL, Signals::Forward, run))
}

fn run(m: Matches) -> Result<u8> {
    let o = options(m)?;
    if o.status {
        return status::report(&o.files, &o.dirs);
    }
    if let Some(fd) = o.fd {
        return descriptor(fd, &o);
    }
    let mut files = Vec::with_capacity(o.files.len());
    for p in &o.files {
        files.push(LockFile::open(PathBuf::from(p), o.mode)?);
    }
    if files.len() > 1 {
        // One canonical order: by the file's identity, so two paths to one file count once and
        // every caller takes the same file first.
        let mut keyed = Vec::with_capacity(files.len());
        for f in files {
            let meta = f
                .file
                .metadata()
                .map_err(|e| Error::io(format_args!("reading lock file {}", show(&f.path)), &e))?;
            keyed.push(((meta.dev(), meta.ino()), f));
        }
        keyed.sort_by_key(|(k, _)| *k);
        keyed.dedup_by_key(|(k, _)| *k);
        files = keyed.into_iter().map(|(_, f)| f).collect();
    }
    let dirs = resolve_dirs(&o.dirs)?;
    // Who we are is read before waiting, not while holding the lock and others wait.
    let mut me: Option<Me> = (o.exclusive || !dirs.is_empty()).then(Me::get);
    let mut clock = Clock::new(o.wait, !o.quiet);
    // Whether each lock was taken here (not held for us by an enclosing elf-lock).
    let mut taken = Vec::with_capacity(files.len());
    for lf in &files {
        let mut notice = |why: Option<&str>| {
            let who = match why {
                Some(why) => why.to_string(),
                None => lf.describe(me.get_or_insert_with(Me::get)),
            };
            elf_core::note(format_args!("waiting for {}: {who}", show(&lf.path)));
        };
        match acquire::lock(&lf.file, o.exclusive, o.wait, &mut clock, &mut notice)? {
            Got::Yes => taken.push(true),
            Got::Enclosed => taken.push(false),
            Got::No => {
                if !o.quiet {
                    let who = lf.describe(me.get_or_insert_with(Me::get));
                    elf_core::note(format_args!(
                        "{} {}: {who}",
                        show(&lf.path),
                        gave_up(o.wait)
                    ));
                }
                return Ok(o.conflict);
            }
            Got::Ancestor(why) => {
                // Not a conflict to wait out but a mistake to fix: said even with -q.
                elf_core::note(format_args!("{}: {why}", show(&lf.path)));
                return Ok(o.conflict);
            }
        }
    }
    clock.disarm();
    let record = if o.exclusive {
        Some(me.get_or_insert_with(Me::get).record(&o.command))
    } else {
        None
    };
    let mut held_dirs = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        let me = me.get_or_insert_with(Me::get);
        match take_dir(
            dir,
            me,
            record.as_deref().unwrap_or_default(),
            &o,
            &mut clock,
        )? {
            Some(d) => held_dirs.push(d),
            None => return Ok(o.conflict),
        }
    }
    clock.disarm();
    if let Some(line) = &record {
        // A lock held for us by an enclosing elf-lock keeps its holder's record.
        for (lf, _) in files.iter().zip(&taken).filter(|(f, t)| f.writable && **t) {
            if let Err(e) = holder::write(&lf.file, line) {
                elf_core::warn(format_args!(
                    "could not write the holder record into {}: {e}",
                    show(&lf.path)
                ));
            }
        }
    }
    if o.verbose {
        elf_core::note(format_args!(
            "got the lock{} in {:.6}s",
            if files.len() + dirs.len() > 1 {
                "s"
            } else {
                ""
            },
            clock.elapsed().as_secs_f64()
        ));
        let shown: Vec<String> = o
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        elf_core::note(format_args!("running: {}", shown.join(" ")));
    }
    // The command and what it starts hold every lock, the directory locks' own flock
    // included (so a --mkdir lock cannot be broken while any of them runs), unless -o.
    let inherit: Vec<i32> = if o.close {
        Vec::new()
    } else {
        files
            .iter()
            .map(|f| f.file.as_raw_fd())
            .chain(held_dirs.iter().map(dirlock::DirLock::fd))
            .collect()
    };
    if !o.close {
        pass_down(&files, &taken);
    }
    drop(clock);
    let code = if o.no_fork {
        child::exec(&o.command, &inherit)?
    } else {
        child::run(&o.command, &inherit, o.close)?
    };
    drop(held_dirs);
    drop(files);
    Ok(code)
}

/// Names the locks taken here in the command's `ELF_LOCK_HELD` (see `elf_core::held`), so a
/// nested elf-lock, elf-commit or elf-write asked for one of them counts it as held instead of
/// waiting on its own ancestor. Only when the command inherits the locks: with `-o` what the
/// command leaves running does not hold them.
fn pass_down(files: &[LockFile], taken: &[bool]) {
    let added: Vec<held::Entry> = files
        .iter()
        .zip(taken)
        .filter(|(_, t)| **t)
        .filter_map(|(f, _)| f.file.metadata().ok())
        .map(|m| held::Entry::mine(&m))
        .collect();
    if added.is_empty() {
        return;
    }
    let value = held::pass_down(&added);
    // SAFETY: elf-lock is single-threaded, so nothing reads the environment meanwhile; the
    // command gets it through execvp(3).
    unsafe { std::env::set_var(held::VAR, value) };
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
