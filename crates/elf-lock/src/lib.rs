//! elf-lock: hold one or more file locks while a command runs.
//!
//! `elf-lock [OPTIONS] LOCKFILE... -- COMMAND [ARGS...]`, or flock(1)'s `LOCKFILE COMMAND...`
//! and `LOCKFILE -c STRING`. Locks are `flock(2)` on lock files that are never deleted, so the
//! kernel drops them when their holder dies; several are taken in one canonical order, so two
//! callers cannot deadlock; a holder record in the lock file says who holds it, and
//! `--status` reports it only when the kernel confirms it. `--mkdir DIR` takes ELF's legacy
//! directory lock and breaks it only when its owner is provably gone.

mod acquire;
mod child;
mod dirlock;
pub mod holder;
mod status;

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use elf_core::cli::{Flag, Matches, Operands, Tool};
use elf_core::signals::{self, Policy as Signals};
use elf_core::{Error, Result, exit, lockfile};

use acquire::{Clock, Got, Wait};
use elf_core::paths::show;
use holder::{Kernel, Me};

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
    Flag::new("timeout", "Give up after SECONDS (fractional)").short('w').value("SECONDS").doc(
        "Wait at most SECONDS (fractional, for example 0.5) for all the locks together; then \
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
        "[-s|-x|-u] [-n] [-w SECONDS] [-E N] FD",
        "--status [--mkdir DIR] [LOCKFILE...]",
    ],
    flags: FLAGS,
    operands: Operands::StopAtFirst,
    operand_kind: "command",
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

/// The shell `-c STRING` runs with.
const SHELL: &str = "/bin/sh";

#[derive(Debug)]
struct Options {
    exclusive: bool,
    wait: Wait,
    conflict: u8,
    close: bool,
    no_fork: bool,
    quiet: bool,
    verbose: bool,
    mode: u32,
    dirs: Vec<OsString>,
    stale_after: Duration,
    status: bool,
    unlock: bool,
    /// flock(1)'s descriptor form: lock this inherited descriptor and exit.
    fd: Option<i32>,
    files: Vec<OsString>,
    command: Vec<OsString>,
}

fn seconds(s: &str) -> std::result::Result<Duration, &'static str> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=1e9).contains(&x) => Ok(Duration::from_secs_f64(x)),
        _ => Err("expected a number of seconds from 0 to 1e9, such as 0.5"),
    }
}

fn options(m: Matches) -> Result<Options> {
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
            other => return Err(Error::internal(format!("flag --{other} has no handler"))),
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
fn operands(
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

/// An open lock file.
struct LockFile {
    path: PathBuf,
    file: File,
    /// Opened for writing, so the holder record can be written.
    writable: bool,
}

impl LockFile {
    fn open(path: PathBuf, mode: u32) -> Result<LockFile> {
        match lockfile::open(&path, mode) {
            Ok(file) => Ok(LockFile {
                path,
                file,
                writable: true,
            }),
            Err(e) => {
                // flock(1) also locks directories and files it can only read (no write
                // permission, a read-only file system); so do we, without a holder record.
                // Symlinks stay refused.
                let readable =
                    std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() || m.is_file());
                if !readable {
                    return Err(e);
                }
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(
                        libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
                    )
                    .open(&path)
                    .map_err(|_| e)?;
                Ok(LockFile {
                    path,
                    file,
                    writable: false,
                })
            }
        }
    }

    /// Who holds it, for messages.
    fn describe(&self, me: &Me) -> String {
        describe(&self.file, me)
    }
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
    for lf in &files {
        let mut notice = || {
            let who = lf.describe(me.get_or_insert_with(Me::get));
            elf_core::note(format_args!("waiting for {}: {who}", show(&lf.path)));
        };
        if let Got::No = acquire::lock(&lf.file, o.exclusive, o.wait, &mut clock, &mut notice)? {
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
        for lf in files.iter().filter(|f| f.writable) {
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

/// flock(1)'s descriptor form: take (or with `-u` release) the lock on an open file the
/// caller passed down, and exit; the caller keeps the lock. The holder record names the
/// parent, which is the holder once elf-lock has exited.
fn descriptor(fd: i32, o: &Options) -> Result<u8> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl(2) F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Error::usage(format!("descriptor {fd} is not open")));
    }
    // SAFETY: the descriptor is open (checked above) and belongs to our caller, so it must not
    // be closed: ManuallyDrop keeps the File from closing it.
    let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let name = format!("descriptor {fd}");
    if o.unlock {
        // SAFETY: flock(2) on an open descriptor.
        if unsafe { libc::flock(fd, libc::LOCK_UN) } != 0 {
            return Err(Error::io(
                format_args!("unlocking {name}"),
                &std::io::Error::last_os_error(),
            ));
        }
        return Ok(exit::OK);
    }
    let mut clock = Clock::new(o.wait, !o.quiet);
    let me = Me::get();
    let mut notice =
        || elf_core::note(format_args!("waiting for {name}: {}", describe(&file, &me)));
    if let Got::No = acquire::lock(&file, o.exclusive, o.wait, &mut clock, &mut notice)? {
        if !o.quiet {
            elf_core::note(format_args!(
                "{name} {}: {}",
                gave_up(o.wait),
                describe(&file, &me)
            ));
        }
        return Ok(o.conflict);
    }
    clock.disarm();
    let access = flags & libc::O_ACCMODE;
    let writable =
        (access == libc::O_WRONLY || access == libc::O_RDWR) && flags & libc::O_APPEND == 0;
    if o.exclusive && writable && file.metadata().is_ok_and(|m| m.is_file()) {
        let (parent, command) = Me::parent();
        if let Err(e) = holder::write(&file, &parent.record(&command)) {
            elf_core::warn(format_args!(
                "could not write the holder record into {name}: {e}"
            ));
        }
    }
    if o.verbose {
        elf_core::note(format_args!(
            "got the lock in {:.6}s",
            clock.elapsed().as_secs_f64()
        ));
    }
    Ok(exit::OK)
}

/// Who holds the lock on an open file, for messages.
fn describe(file: &File, me: &Me) -> String {
    let Ok(meta) = file.metadata() else {
        return "held by an unknown process".to_string();
    };
    let kernel = Kernel::of(&meta).unwrap_or_default();
    let rec = if meta.is_file() {
        holder::read(file)
    } else {
        None
    };
    holder::describe(&kernel, rec.as_ref(), me)
}

fn gave_up(wait: Wait) -> String {
    match wait {
        Wait::For(d) => format!("not locked within {}s", d.as_secs_f64()),
        _ => "is busy, not waiting".to_string(),
    }
}

/// Absolute, with the parent's symlinks resolved (the last component is never followed),
/// sorted and without duplicates: the canonical order for directory locks, taken after the
/// file locks.
fn resolve_dirs(dirs: &[OsString]) -> Result<Vec<PathBuf>> {
    let cwd = if dirs.iter().any(|d| Path::new(d).is_relative()) {
        std::env::current_dir().map_err(|e| Error::io("reading the current directory", &e))?
    } else {
        PathBuf::new()
    };
    let mut out: Vec<PathBuf> = Vec::with_capacity(dirs.len());
    for d in dirs {
        let p = cwd.join(d);
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(Error::usage(format!(
                "--mkdir {}: not a directory name",
                show(&p)
            )));
        };
        let parent = std::fs::canonicalize(parent)
            .map_err(|e| Error::io(format_args!("resolving {}", show(parent)), &e))?;
        out.push(parent.join(name));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Takes one directory lock within the wait allowed; `None` when it was not obtained.
fn take_dir(
    path: &Path,
    me: &Me,
    record: &[u8],
    o: &Options,
    clock: &mut Clock,
) -> Result<Option<dirlock::DirLock>> {
    let mut delay = Duration::from_millis(1);
    loop {
        if let Some(sig) = signals::received() {
            return Err(Error::signal(sig));
        }
        if let Some(lock) = dirlock::try_take(path, record)? {
            return Ok(Some(lock));
        }
        match dirlock::examine(path, me, o.stale_after)? {
            dirlock::Seen::Gone | dirlock::Seen::Broken => continue,
            dirlock::Seen::Held(who) => {
                if o.wait == Wait::No || clock.expired() {
                    if !o.quiet {
                        elf_core::note(format_args!("{} {}: {who}", show(path), gave_up(o.wait)));
                    }
                    return Ok(None);
                }
                if clock.notice_due() {
                    elf_core::note(format_args!("waiting for {}: {who}", show(path)));
                }
            }
        }
        // A directory lock gives no wake-up: poll, 1 ms doubling to 50 ms, never past the
        // deadline.
        acquire::nap(clock.remaining().map_or(delay, |left| delay.min(left)));
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_table_is_valid() {
        assert_eq!(elf_core::cli::check_table(&TOOL), Ok(()));
    }

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
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "nan", "inf", "1e10", "x", ""] {
            assert!(seconds(bad).is_err(), "{bad:?} accepted");
        }
    }
}
