//! elf-commit: commit exactly the named paths to git, safely beside other scripts and git.
//!
//! Two forms:
//!
//! - direct: `elf-commit -m MESSAGE -- PATH...` commits those paths and prints the commit id;
//! - records: `elf-commit [-m MESSAGE]` reads JSON lines and commits, for each record, the
//!   paths it names, passing the record on with the commit id added.
//!
//! # Record format
//!
//! Read: `commit.paths` (an array of strings, or one string), else the paths `elf-write`
//! reported in the same record (`write.path`, or each element's `path` when `write` is an
//! array; writes without a path are skipped); `commit.message`, else `-m`. Paths are relative
//! to the work tree. A record with neither a `commit` key nor written paths, or with `error`,
//! is passed on untouched.
//!
//! Added under `commit`:
//!
//! - `sha`: HEAD after the commit: the new commit, or, when nothing was new, the commit that
//!   already holds these paths as they are (`null` on a branch without commits);
//! - `unchanged: true` when no new commit was made for this record (a replay);
//! - `skipped`: a reason, when paths were left out because git ignores them.
//!
//! ```json
//! {"write":{"path":"memory/failures/x.md","bytes":80,"created":true},
//!  "commit":{"message":"failure: x","sha":"9f2c4e...","unchanged":true}}
//! ```
//!
//! The values in `commit` may be references to other parts of the record (`$ref`, `$join`, see
//! `elf_core::refs`), such as `{"message":{"$join":["heuristic: H-",{"$ref":"/db/id"}]}}`; they
//! are resolved before the commit and stay in the record as written. A bad one is a bad record
//! (65).
//!
//! An append elf-write reported (a `write` object with `mode` "append" and the results `path`,
//! `end` and `bytes`, in a record with a `key`) makes the record's commit take HEAD's file with
//! the record's entry (its marker line and content, ending at `end`) appended, instead of the
//! work tree's file, and the index entry the index's file with the entry appended: the user's
//! edits and later records' entries stay out; see `git.rs` and `changes.rs`.

mod changes;
mod git;
mod ident;
mod indexlock;
pub mod job;
pub mod message;
pub mod paths;
mod push;
mod rebase;
mod remote;
mod renumber;
mod repository;
mod tree;
mod worktree;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value};

use elf_core::backoff::parse_duration;
use elf_core::cli::{Flag, Kind, Matches, Operand, Operands, Tool};
use elf_core::record::{self, Reader, Record, Writer};
use elf_core::signals::Policy;
use elf_core::text::escape;
use elf_core::{Error, IoContext, Result, exit};

use crate::git::{Job, Mode, Options, Outcome, Repo};
use crate::job::job_of;
use crate::message::Message;

/// The most records one `--batch` commit takes.
const BATCH_MAX: usize = 1000;

/// Without `--batch`, the most records already waiting that are committed (one commit each)
/// under one taking of the locks, with the index written once for them all.
const GROUP_MAX: usize = 16;

const FLAGS: &[Flag] = &[
    Flag::new("message", "The commit message")
        .short('m')
        .value("MESSAGE")
        .doc(
            "The commit message: required in the direct form; in the record form, used for records \
         without commit.message. Control characters and ANSI escapes are removed; the first line \
         is the subject and anything after a newline goes into the body.",
        ),
    Flag::new("repo", "The repository's work tree (default: discover)")
        .value("DIR")
        .path()
        .doc(
            "The repository whose work tree is DIR (exactly DIR: no search upwards). Default: the \
         repository containing the current directory, found as git finds it.",
        ),
    Flag::new("init", "Create the repository when there is none").doc(
        "Create the repository (at --repo DIR, or in the current directory) when there is none. \
         An existing repository is used as it is.",
    ),
    Flag::new("check", "Only check that this repository is supported").doc(
        "Commit nothing: exit 0 when elf-commit can commit in this repository (its format and \
         its index are supported, an identity is configured, the lock file can be opened), \
         else the status and the one line a commit would fail with: 69 and \"unsupported: \
         WHAT\" for a repository elf-commit cannot work in (a SHA-256 or reftable repository, \
         an unknown index extension), 64 for no identity. Takes no PATH operands.",
    ),
    Flag::new("lock", "The lock file serialising commits")
        .value("PATH")
        .path()
        .doc(
            "The lock file (flock) that serialises commits to the repository. Default: \
         .git/elf-commit.lock. The ELF wrappers pass .git/claude-lock, the lock the legacy \
         scripts take, so that they exclude those too. A symlink is refused (77).",
        ),
    Flag::new("timeout", "How long to wait for locks (default 10s)")
        .short('w')
        .value("DURATION")
        .doc(
            "How long one commit may wait, in all, for the lock file, for .git/index.lock held by \
         another git process, and for the branch's ref lock: a number with ms, s, m, h or d (a bare \
         number is seconds). Default 10s. Past it: exit 75, nothing committed, and a message \
         naming the lock, its age and which process on this machine has it open.",
        ),
    Flag::new(
        "stale-index-lock",
        "Remove an unused index.lock this old (10m)",
    )
    .value("DURATION")
    .doc(
        "Remove .git/index.lock, with a warning, when no process on this machine has it open \
         (checked through /proc) and it is older than DURATION. Default 10m; 0 never removes \
         one. A lock left by an elf-commit that is gone is removed at once (elf-commit marks \
         its own locks with its process id).",
    ),
    Flag::new("ignored", "A gitignored path is skipped or an error")
        .value("HOW")
        .choices(&["skip", "error"])
        .doc(
            "What to do with a path git ignores (.gitignore, .git/info/exclude, core.excludesFile) \
         that is not tracked already: skip (default) leaves it out and says why in \
         commit.skipped, exit 0; error makes the record fail with 65.",
        ),
    Flag::new("batch", "Commit the records already waiting together").doc(
        "Commit every record already waiting on standard input (up to 1000) as one commit, whose \
         subject is the first record's with \"and N more\" and whose body holds every record's \
         message. Each record gets that commit's id. A live pipeline never waits for more input.",
    ),
    elf_core::cli::KEEP_GOING.doc(concat!(
        elf_core::keep_going_doc!(),
        "\n\nRecord form. A repository elf-commit cannot open or work in concerns every record: \
         it stops the run (69, 66...) with or without the flag."
    )),
    push::FLAG_PUSH,
    push::FLAG_PUSH_TIMEOUT,
    push::FLAG_DB,
    push::FLAG_SYNC,
    Flag::new("max-line", "The longest input line accepted (16 MiB)")
        .value("BYTES")
        .doc(
            "The longest input line accepted, in bytes (default 16777216). A longer line is a bad \
         record (65).",
        ),
];

static TOOL: Tool = Tool {
    name: "elf-commit",
    about: "Commit exactly the named paths to git, safely beside other scripts and git itself",
    usage: &[
        "[OPTIONS] -m MESSAGE -- PATH...",
        "[OPTIONS] [-m MESSAGE] < records.jsonl",
        "[--repo DIR] --check",
        "[OPTIONS] --push REMOTE --sync",
    ],
    flags: FLAGS,
    operands: Operands::Free,
    args: &[Operand::many(
        "PATH",
        Kind::File,
        "the paths to commit (with -m, instead of records)",
    )],
    commands: &[],
    exits: &[
        "0", "64", "65", "66", "69", "70", "74", "75", "77", "128+N", "141",
    ],
    man: include_str!("../elf-commit.1.in"),
    version: env!("CARGO_PKG_VERSION"),
};

/// The whole program, as the `elf-commit` binary runs it.
pub fn main() -> ExitCode {
    elf_core::run(&TOOL, Policy::Exit, run)
}

/// The flags, read once from the table's matches.
#[derive(Debug)]
struct Flags {
    message: Option<String>,
    repo: Option<PathBuf>,
    init: bool,
    check: bool,
    lock: Option<PathBuf>,
    timeout: Duration,
    stale: Option<Duration>,
    ignored_error: bool,
    batch: bool,
    keep_going: bool,
    max_line: Option<usize>,
    push: push::Given,
    operands: Vec<OsString>,
}

fn options(m: Matches) -> Result<Flags> {
    let mut o = Flags {
        message: None,
        repo: None,
        init: false,
        check: false,
        lock: None,
        timeout: Duration::from_secs(10),
        stale: Some(Duration::from_secs(600)),
        ignored_error: false,
        batch: false,
        keep_going: false,
        max_line: None,
        push: push::Given::default(),
        operands: m.operands,
    };
    for g in &m.flags {
        match g.name() {
            "message" => o.message = Some(g.str()?.to_owned()),
            "repo" => o.repo = Some(PathBuf::from(g.os()?)),
            "init" => o.init = true,
            "check" => o.check = true,
            "lock" => o.lock = Some(PathBuf::from(g.os()?)),
            "timeout" => o.timeout = g.with(parse_duration)?,
            "stale-index-lock" => o.stale = Some(g.with(parse_duration)?).filter(|d| !d.is_zero()),
            "ignored" => o.ignored_error = g.str()? == "error",
            "batch" => o.batch = true,
            "keep-going" => o.keep_going = true,
            "max-line" => o.max_line = Some(g.parse::<usize>()?),
            "push" | "push-timeout" | "db" | "sync" => o.push.read(g)?,
            _ => return Err(g.unhandled()),
        }
    }
    Ok(o)
}

fn run(m: Matches) -> Result<u8> {
    let o = options(m)?;
    let record_only = [
        ("batch", o.batch),
        ("keep-going", o.keep_going),
        ("max-line", o.max_line.is_some()),
    ];
    if !o.operands.is_empty() {
        if let Some((flag, _)) = record_only.iter().find(|(_, given)| *given) {
            return Err(Error::usage(format!(
                "--{flag} applies to the record form only (no PATH operands)"
            )));
        }
    }
    if o.check {
        let misplaced = [("message", o.message.is_some()), ("init", o.init)]
            .into_iter()
            .chain(record_only)
            .find(|(_, given)| *given);
        if let Some((flag, _)) = misplaced {
            return Err(Error::usage(format!("--check does not take --{flag}")));
        }
        if !o.operands.is_empty() {
            return Err(Error::usage("--check takes no PATH operands"));
        }
    }
    let push = o.push.check(o.timeout, !o.operands.is_empty())?;
    let repository = repository::open(o.repo.as_deref(), o.init)?;
    let repo = Repo::new(
        repository,
        o.lock.clone(),
        Options {
            timeout: o.timeout,
            stale: o.stale,
            ignored_error: o.ignored_error,
        },
    )?;
    if o.check {
        repo.check()?;
        return Ok(exit::OK);
    }
    let push = push.map(|p| p.at(&repo, o.lock.as_deref()));
    if o.push.sync {
        return push::sync(&repo, push.as_ref());
    }
    if o.operands.is_empty() {
        records(&repo, &o, push.as_ref())
    } else {
        let status = direct(&repo, &o.operands, o.message.as_deref(), o.repo.is_some())?;
        push::after_direct(&repo, push.as_ref());
        Ok(status)
    }
}

/// `elf-commit -m MESSAGE -- PATH...`: relative paths start from the work tree when `--repo`
/// names it (as with `git -C DIR`), else from the current directory (as with git).
fn direct(
    repo: &Repo,
    operands: &[OsString],
    message: Option<&str>,
    from_workdir: bool,
) -> Result<u8> {
    let raw = message.ok_or_else(|| Error::usage("the direct form needs -m MESSAGE"))?;
    let message = Message::parse(raw).ok_or_else(|| Error::usage("the commit message is empty"))?;
    let base = if from_workdir {
        repo.workdir().to_path_buf()
    } else {
        let cwd = std::env::current_dir().ctx("finding the current directory")?;
        cwd.canonicalize().unwrap_or(cwd)
    };
    let paths = operands
        .iter()
        .map(|o| paths::relative(repo.workdir(), &base, Path::new(o)))
        .collect::<Result<Vec<_>>>()?;
    let job = Job {
        paths,
        message,
        appends: Vec::new(),
    };
    let outcome = repo
        .commit(
            std::slice::from_ref(&job),
            Mode {
                keep_going: false,
                separate: false,
            },
        )?
        .pop()
        .ok_or_else(|| Error::internal("no outcome for the commit"))??;
    for p in &outcome.skipped {
        elf_core::warn(format_args!("skipped {}: ignored by git", p.display()));
    }
    let mut out = std::io::stdout().lock();
    match outcome.sha {
        Some(sha) => writeln!(out, "{sha}")
            .and_then(|()| out.flush())
            .ctx("writing output")?,
        None => elf_core::note("nothing to commit"),
    }
    Ok(exit::OK)
}

/// One input record on its way through a group.
enum Slot {
    /// Passed on untouched.
    Pass(Record),
    /// Committed as job number `.1`, read from line `.2`.
    Job(Record, u64),
    /// Failed before committing.
    Fail(Option<Record>, Error),
}

/// The record form.
fn records(repo: &Repo, o: &Flags, push: Option<&remote::Remote>) -> Result<u8> {
    let message = o.message.as_deref();
    let (batch, keep_going) = (o.batch, o.keep_going);
    let mut reader = Reader::stdin(o.max_line.unwrap_or(record::DEFAULT_MAX_LINE))?;
    let mut w = Writer::stdout();
    let mut shifts = push::Shifts::default();
    while let Some(first) = reader.next_record() {
        let mut group = vec![first];
        let most = if batch { BATCH_MAX } else { GROUP_MAX };
        while group.len() < most && reader.ready() {
            match reader.next_record() {
                Some(item) => group.push(item),
                None => break,
            }
        }
        let mut slots = Vec::with_capacity(group.len());
        let mut jobs = Vec::new();
        for item in group {
            slots.push(match item {
                Err(e) => Slot::Fail(None, e),
                Ok((_, rec)) if record::has_error(&rec) => Slot::Pass(rec),
                Ok((line, rec)) => match job_of(&rec, message, repo.workdir()) {
                    Ok(None) => Slot::Pass(rec),
                    Ok(Some(job)) => {
                        jobs.push(job);
                        Slot::Job(rec, line)
                    }
                    Err(e) => Slot::Fail(Some(rec), e.at_line(line)),
                },
            });
            if !keep_going && matches!(slots.last(), Some(Slot::Fail(..))) {
                break; // nothing after the first failure is attempted
            }
        }
        let results = if jobs.is_empty() {
            Vec::new()
        } else {
            let mode = Mode {
                keep_going,
                separate: !batch,
            };
            shifts.adjust(&mut jobs);
            match repo.commit(&jobs, mode) {
                Ok(r) => r,
                Err(e) if keep_going => vec![Err(e); jobs.len()],
                Err(e) => {
                    for slot in slots {
                        match slot {
                            Slot::Pass(rec) => w.write(&rec)?,
                            Slot::Job(_, line) => return Err(e.at_line(line)),
                            Slot::Fail(..) => break,
                        }
                    }
                    return Err(e);
                }
            }
        };
        let pushed = push.map(|p| push::after_group(repo.workdir(), p));
        if let Some(p) = &pushed {
            shifts.record(p);
        }
        let mut results = results.into_iter();
        for slot in slots {
            match slot {
                Slot::Pass(rec) => w.write(&rec)?,
                Slot::Fail(rec, e) => {
                    if !keep_going {
                        return Err(e);
                    }
                    elf_core::note(&e);
                    let rec = match rec {
                        Some(mut r) => {
                            record::set_error(&mut r, TOOL.name, &e);
                            r
                        }
                        None => record::error_record(TOOL.name, &e),
                    };
                    w.write(&rec)?;
                }
                Slot::Job(mut rec, line) => match results.next() {
                    Some(Ok(outcome)) => {
                        annotate(&mut rec, &outcome);
                        if let Some(p) = &pushed {
                            push::annotate(&mut rec, p);
                        }
                        w.write(&rec)?;
                    }
                    Some(Err(e)) => {
                        let e = e.at_line(line);
                        if !keep_going {
                            return Err(e);
                        }
                        elf_core::note(&e);
                        record::set_error(&mut rec, TOOL.name, &e);
                        w.write(&rec)?;
                    }
                    None => {
                        return Err(
                            Error::internal("a record was left without an outcome").at_line(line)
                        );
                    }
                },
            }
        }
    }
    Ok(exit::OK)
}

/// Adds the outcome under `commit`, keeping every other key where it was.
fn annotate(rec: &mut Record, o: &Outcome) {
    let entry = rec
        .entry("commit")
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    let Value::Object(c) = entry else { return };
    c.insert(
        "sha".into(),
        o.sha.map_or(Value::Null, |s| Value::from(s.to_string())),
    );
    if o.unchanged {
        c.insert("unchanged".into(), Value::Bool(true));
    } else {
        c.shift_remove("unchanged");
    }
    if o.skipped.is_empty() {
        c.shift_remove("skipped");
    } else {
        let list: Vec<String> = o
            .skipped
            .iter()
            .map(|p| escape(&p.to_string_lossy()).into_owned())
            .collect();
        c.insert(
            "skipped".into(),
            Value::from(format!("ignored by git: {}", list.join(", "))),
        );
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

    fn rec(s: &str) -> Record {
        record::parse_line(s.as_bytes())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn job(s: &str, m: Option<&str>) -> Result<Option<(Vec<String>, String)>> {
        let wd = Path::new("/nonexistent-elf-wt");
        Ok(job_of(&rec(s), m, wd)?.map(|j| {
            (
                j.paths
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect(),
                j.message.subject,
            )
        }))
    }

    #[test]
    fn paths_come_from_commit_or_write() {
        let got = job(
            r#"{"commit":{"paths":["a.md","./b/c.md"],"message":"m"}}"#,
            None,
        );
        assert_eq!(
            got,
            Ok(Some((vec!["a.md".into(), "b/c.md".into()], "m".into())))
        );
        let got = job(
            r#"{"write":{"path":"w.md"},"commit":{"message":"m"}}"#,
            None,
        );
        assert_eq!(got, Ok(Some((vec!["w.md".into()], "m".into()))));
        let got = job(
            r#"{"write":[{"path":"x"},{"bytes":3},null,{"path":"y"}]}"#,
            Some("dflt"),
        );
        assert_eq!(got, Ok(Some((vec!["x".into(), "y".into()], "dflt".into()))));
        assert_eq!(job(r#"{"db":{"id":1}}"#, Some("m")), Ok(None));
    }

    #[test]
    fn appends_are_read_from_the_write_results() {
        let wd = Path::new("/nonexistent-elf-wt");
        let appends = |s: &str| {
            job_of(&rec(s), Some("m"), wd)
                .ok()
                .flatten()
                .map(|j| j.appends)
                .unwrap_or_default()
        };
        let got = appends(
            r#"{"key":"k","write":[{"path":"a","bytes":1},
                {"path":"h.md","mode":"append","bytes":4,"end":30},
                {"path":"h.md","mode":"append","bytes":4},
                {"path":"g.md","mode":{"$ref":"/m"},"bytes":2,"end":9}],"m":"append"}"#,
        );
        assert_eq!(
            got,
            [
                job::Append {
                    path: PathBuf::from("h.md"),
                    end: 30,
                    bytes: 4,
                    marker: b"<!-- elf:k 1 -->\n".to_vec(),
                },
                job::Append {
                    path: PathBuf::from("g.md"),
                    end: 9,
                    bytes: 2,
                    marker: b"<!-- elf:k 3 -->\n".to_vec(),
                }
            ]
        );
        let one = r#"{"key":"k","write":{"path":"h.md","mode":"append","bytes":4,"end":30}}"#;
        assert_eq!(appends(one)[0].marker, b"<!-- elf:k -->\n".to_vec());
        // No key, no marker: nothing to check an end by.
        let keyless = r#"{"write":{"path":"h.md","mode":"append","bytes":4,"end":30}}"#;
        assert_eq!(appends(keyless), []);
    }

    #[test]
    fn bad_records_are_data_errors() {
        let code = |s: &str, m: Option<&str>| job(s, m).err().map(|e| e.code());
        assert_eq!(code(r#"{"commit":{"message":"m"}}"#, None), Some(65));
        assert_eq!(code(r#"{"write":{"path":"x"}}"#, None), Some(65));
        assert_eq!(
            code(r#"{"commit":{"paths":[1],"message":"m"}}"#, None),
            Some(65)
        );
        assert_eq!(code(r#"{"commit":"x"}"#, None), Some(65));
        assert_eq!(
            code(r#"{"commit":{"paths":["../x"],"message":"m"}}"#, None),
            Some(65)
        );
        assert_eq!(
            code(
                r#"{"commit":{"paths":["/etc/passwd"],"message":"m"}}"#,
                None
            ),
            Some(65)
        );
        assert_eq!(
            code(r#"{"commit":{"paths":["x"],"message":"\u001b[0m"}}"#, None),
            Some(65)
        );
        assert_eq!(code(r#"{"write":{"path":3}}"#, Some("m")), Some(65));
    }

    #[test]
    fn annotate_keeps_order_and_clears_stale_fields() {
        let mut r = rec(r#"{"key":"k","commit":{"message":"m","unchanged":true,"x":1},"z":2}"#);
        let o = Outcome {
            sha: None,
            unchanged: false,
            skipped: vec![PathBuf::from("a")],
        };
        annotate(&mut r, &o);
        assert_eq!(
            serde_json::to_string(&r).unwrap_or_default(),
            r#"{"key":"k","commit":{"message":"m","x":1,"sha":null,"skipped":"ignored by git: a"},"z":2}"#
        );
    }
}
