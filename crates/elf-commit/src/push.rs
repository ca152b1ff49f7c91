//! The `--push` flags, and what a push means for the forms of elf-commit: after the direct
//! form's commit, after each group of records (whose records then say where their entries
//! ended up), or alone (`--sync`).
//!
//! A push never changes the status of what was committed: the records are safe here. A remote
//! that cannot be reached, or a push refused (a real conflict, a rewritten remote history),
//! is one warning line; only `--sync`, which does nothing else, exits 75 (unreachable) or 69
//! (refused) for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use elf_core::backoff::parse_duration;
use elf_core::cli::Flag;
use elf_core::record::Record;
use elf_core::{Error, Result, exit};

use crate::git::Repo;
use crate::rebase;
use crate::remote::{self, Outcome, Remote, Report};

pub const FLAG_PUSH: Flag = Flag::new("push", "Push each commit to REMOTE")
    .value("REMOTE")
    .doc(
        "After the commit (of each group of records), push the current branch to the same \
         branch of REMOTE (a remote's name or URL) with git, never forced. Rejected because \
         the remote moved: fetch, replay this machine's unpushed commits onto the remote's \
         head (appended entries after the remote's, colliding H-<id> headings renumbered with \
         their rows in --db, a new file whose name the remote has as NAME-2.md) and retry with \
         backoff (full jitter) within --push-timeout. A remote that cannot be reached: the \
         commits stay here, one warning, exit 0; the next push takes them along. A real \
         conflict or a rewritten remote history: refused with one warning, nothing pushed.",
    );

pub const FLAG_PUSH_TIMEOUT: Flag = Flag::new("push-timeout", "Time budget of one push (30s)")
    .value("DURATION")
    .doc(
        "How long one push may take, fetches, replays and retries included (a number with ms, \
         s or m; default 30s). Past it the commits stay here unpushed, with a warning.",
    );

pub const FLAG_DB: Flag = Flag::new("db", "The index whose rows follow renumbered entries")
    .value("PATH")
    .path()
    .doc(
        "The ELF index (SQLite) whose heuristics rows move with the entries --push renumbers, \
         and whose failure rows follow the files it renames. Default: $ELF_DB; without either, \
         only the markdown is changed.",
    );

pub const FLAG_SYNC: Flag = Flag::new("sync", "Only push (fetching and replaying as needed)").doc(
    "Commit nothing: with --push, bring this branch and the remote's together (fetch, replay \
     this machine's unpushed commits onto the remote's head, push) and exit: 0 done, 75 the \
     remote could not be reached, 69 refused. Takes no PATH operands and reads no input.",
);

/// The push flags as given.
#[derive(Debug, Default)]
pub struct Given {
    name: Option<String>,
    budget: Option<Duration>,
    db: Option<PathBuf>,
    /// `--sync`.
    pub sync: bool,
}

impl Given {
    /// Reads one of `--push`, `--push-timeout`, `--db`, `--sync`.
    pub fn read(&mut self, g: &elf_core::cli::Given) -> Result<()> {
        match g.name() {
            "push" => {
                let name = g.str()?;
                if name.is_empty() || name.starts_with('-') {
                    return Err(g.bad(name, "not a remote"));
                }
                self.name = Some(name.to_owned());
            }
            "push-timeout" => self.budget = Some(g.with(parse_duration)?),
            "db" => self.db = Some(PathBuf::from(g.os()?)),
            "sync" => self.sync = true,
            _ => return Err(g.unhandled()),
        }
        Ok(())
    }

    /// The push asked for, checked against the other flags; `timeout` is `--timeout`.
    pub fn check(&self, timeout: Duration, operands: bool) -> Result<Option<Flags>> {
        let Some(name) = self.name.clone() else {
            let given = [
                ("push-timeout", self.budget.is_some()),
                ("db", self.db.is_some()),
                ("sync", self.sync),
            ];
            if let Some((f, _)) = given.iter().find(|(_, g)| *g) {
                return Err(Error::usage(format!("--{f} needs --push REMOTE")));
            }
            return Ok(None);
        };
        if self.sync && operands {
            return Err(Error::usage("--sync takes no PATH operands"));
        }
        let db = self.db.clone().or_else(|| {
            std::env::var_os("ELF_DB")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        Ok(Some(Flags {
            name,
            budget: self.budget.unwrap_or(Duration::from_secs(30)),
            db,
            timeout,
        }))
    }
}

/// The push flags, checked.
pub struct Flags {
    name: String,
    budget: Duration,
    db: Option<PathBuf>,
    timeout: Duration,
}

impl Flags {
    /// With the repository: the commit lock (`--lock`, else `.git/elf-commit.lock`).
    pub fn at(self, repo: &Repo, lock: Option<&Path>) -> Remote {
        let lock = match lock {
            Some(l) => l.to_path_buf(),
            None => git2::Repository::open(repo.workdir())
                .map(|r| r.path().join("elf-commit.lock"))
                .unwrap_or_else(|_| repo.workdir().join(".git/elf-commit.lock")),
        };
        Remote {
            name: self.name,
            budget: self.budget,
            db: self.db,
            lock,
            timeout: self.timeout,
        }
    }
}

fn run(workdir: &Path, r: &Remote, only_if_ahead: bool) -> Result<(Outcome, Report)> {
    remote::push(workdir, r, only_if_ahead)
}

fn warn(r: &Remote, o: &Outcome) {
    match o {
        Outcome::Pushed => {}
        Outcome::Unreachable(why) => elf_core::warn(format_args!(
            "not pushed to {}: {why}; the commits stay here and the next push takes them along",
            r.name
        )),
        Outcome::Refused(why) => elf_core::warn(format_args!("push to {} refused: {why}", r.name)),
    }
}

/// `--sync`.
pub fn sync(repo: &Repo, r: Option<&Remote>) -> Result<u8> {
    let r = r.ok_or_else(|| Error::usage("--sync needs --push REMOTE"))?;
    let (o, _) = run(repo.workdir(), r, false)?;
    warn(r, &o);
    Ok(match o {
        Outcome::Pushed => exit::OK,
        Outcome::Unreachable(_) => 75,
        Outcome::Refused(_) => elf_core::exit::UNAVAILABLE,
    })
}

/// After the direct form's commit.
pub fn after_direct(repo: &Repo, r: Option<&Remote>) {
    if let Some(r) = r {
        match run(repo.workdir(), r, true) {
            Ok((o, _)) => warn(r, &o),
            Err(e) => warn(r, &Outcome::Unreachable(e.message().to_string())),
        }
    }
}

/// What a group's push did.
pub struct Pushed {
    ok: bool,
    report: Report,
}

/// After a group of records.
pub fn after_group(workdir: &Path, r: &Remote) -> Pushed {
    let (o, report) = match run(workdir, r, true) {
        Ok(x) => x,
        Err(e) => (
            Outcome::Unreachable(e.message().to_string()),
            Report::default(),
        ),
    };
    warn(r, &o);
    Pushed {
        ok: o == Outcome::Pushed,
        report,
    }
}

/// A committed record after its group's push: `commit.pushed`, and, when the push gave its
/// entry a new id or its file a new name, `db.id` and `write.path` say where it ended up.
pub fn annotate(rec: &mut Record, p: &Pushed) {
    let key = rec.get("key").and_then(Value::as_str).map(str::to_string);
    if let Some(key) = key {
        if let Some(id) = p.report.renumbered.get(&key) {
            if let Some(Value::Object(db)) = rec.get_mut("db") {
                if db.contains_key("id") {
                    db.insert("id".into(), Value::from(*id));
                }
            }
        }
        for (from, to, k) in &p.report.renames {
            if k.is_none() && from.starts_with(rebase::EXPERIMENTS) {
                rebase::move_write_paths(rec, from, to);
            } else if k.as_deref() == Some(key.as_str()) {
                if let Some(Value::Object(w)) = rec.get_mut("write") {
                    if w.get("path").and_then(Value::as_str) == Some(from.as_str()) {
                        w.insert("path".into(), Value::from(to.clone()));
                    }
                }
            }
        }
    }
    if let Some(Value::Object(c)) = rec.get_mut("commit") {
        c.insert("pushed".into(), Value::Bool(p.ok));
    }
}

/// The appends elf-write made before a push moved their files (see [`Report::shifts`]):
/// their `end` is moved as the file was, so that each record's commit still holds exactly its
/// own entry.
#[derive(Debug, Default)]
pub struct Shifts(Vec<(std::path::PathBuf, u64, u64)>);

impl Shifts {
    /// Keeps what a push moved.
    pub fn record(&mut self, p: &Pushed) {
        for (path, size, by) in &p.report.shifts {
            self.0.push((PathBuf::from(path), *size, *by));
        }
    }

    /// Moves the ends of `jobs`' appends written before each move. Files only grow between
    /// two moves, so an end at or below a file's size at a move was written before it.
    pub fn adjust(&self, jobs: &mut [crate::job::Job]) {
        for job in jobs {
            for a in &mut job.appends {
                for (path, size, by) in &self.0 {
                    if a.path == *path && a.end <= *size {
                        a.end += by;
                    }
                }
            }
        }
    }
}
