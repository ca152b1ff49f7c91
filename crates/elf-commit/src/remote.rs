//! `--push REMOTE`: every record commit reaches the remote.
//!
//! After a group of records is committed, the current branch is pushed to the same branch of
//! REMOTE with the `git` CLI (the user's transports, credentials and hooks; an argument
//! vector, never a shell), as a plain push: never forced, so the remote's branch only ever
//! moves by fast-forward (the remote's compare-and-swap). A push rejected because another
//! machine pushed first fetches the branch, replays this machine's unpushed commits (those
//! not in the remote's branch) onto the remote's head (`rebase.rs`, with the ids of colliding
//! entries moved first in the index, `renumber.rs`), and tries again, with elf-core's backoff
//! policy (full jitter), until it succeeds or `--push-timeout` runs out.
//!
//! Outcomes: pushed; nothing to push; unreachable (the fetch or push failed for another
//! reason, or the time ran out: the commits stay here and the next push takes them along);
//! refused (a real conflict, a rewritten remote history, a hook's refusal: nothing is pushed
//! and nothing local changes). The last commit this machine pushed or took from the remote is
//! kept as `refs/elf/pushed/REMOTE/BRANCH`: a remote head that no longer contains it had its
//! history rewritten.
//!
//! The local part (replaying, moving the branch, updating the files and the index) runs under
//! the commit lock, the files each under elf-write's lock for them. The files and the index
//! are updated before the branch moves, and `.git/elf-rebase` names the commit being moved
//! to: a run killed in between finds the files as that commit has them and accepts them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use git2::{IndexEntry, IndexTime, Oid, Repository};

use elf_core::backoff::{Policy, Schedule};
use elf_core::text::escape;
use elf_core::{Error, lockfile};

use crate::rebase::{self, Conflict};
use crate::renumber;
use crate::repository::git_error;

/// What `--push` was given.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The remote's name (or URL).
    pub name: String,
    /// The time budget of one push, retries included.
    pub budget: Duration,
    /// The index whose rows follow renumbered entries and renamed files.
    pub db: Option<PathBuf>,
    /// The commit lock.
    pub lock: PathBuf,
    /// How long to wait for a lock or a busy index.
    pub timeout: Duration,
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The remote's branch is this branch's head.
    Pushed,
    /// Not pushed; the records stay committed here.
    Unreachable(String),
    /// Refused; nothing pushed, nothing changed here.
    Refused(String),
}

/// What a push did, for the records it passes on.
#[derive(Debug, Default)]
pub struct Report {
    /// Record keys whose entry took a new id.
    pub renumbered: BTreeMap<String, u64>,
    /// Files renamed: (from, to, record key).
    pub renames: Vec<(String, String, Option<String>)>,
    /// Files moved under entries appended and not committed yet: (path, the file's size
    /// before, how much longer it became). Those entries' `write.end` moved by as much.
    pub shifts: Vec<(String, u64, u64)>,
}

fn cli(workdir: &Path, args: &[&str], deadline: Instant) -> Result<(bool, String, String), String> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(workdir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = err.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("waiting for git: {e}")),
        }
    };
    let o = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let e = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    match status {
        Some(s) => Ok((s.success(), o, e)),
        None => Err(format!("git {} took too long (--push-timeout)", args[0])),
    }
}

/// The last line of git's message that says something.
fn last_line(s: &str) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("hint:"))
        .unwrap_or("no message");
    escape(line).into_owned()
}

/// A crash on purpose, for the tests: `ELF_COMMIT_CRASH=STAGE` kills this process with
/// SIGKILL when it reaches STAGE (`fetched`, `renumbered`, `files`, `pushed`), as a power cut
/// or a `kill -9` would stop it there.
fn crash_point(stage: &str) {
    if std::env::var_os("ELF_COMMIT_CRASH").is_some_and(|v| v == stage) {
        // SAFETY: kill(2) on our own process touches no memory.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

fn read_oid(repo: &Repository, name: &str) -> Option<Oid> {
    repo.refname_to_id(name).ok()
}

/// Pushes the current branch to `r` (fetching and replaying when rejected). With
/// `only_if_ahead`, a branch that is where this machine last saw the remote's makes no
/// network call at all.
pub fn push(workdir: &Path, r: &Remote, only_if_ahead: bool) -> Result<(Outcome, Report), Error> {
    let mut report = Report::default();
    let repo = Repository::open(workdir).map_err(|e| git_error("opening the repository", &e))?;
    let head = repo.head().map_err(|e| git_error("reading HEAD", &e))?;
    let Some(branch_ref) = head
        .name()
        .filter(|n| n.starts_with("refs/heads/"))
        .map(String::from)
    else {
        return Ok((Outcome::Refused("HEAD is not on a branch".into()), report));
    };
    drop(head);
    let branch = branch_ref.trim_start_matches("refs/heads/").to_string();
    let tracking = format!("refs/remotes/{}/{branch}", r.name);
    let pushed_ref = format!("refs/elf/pushed/{}/{branch}", r.name);
    if only_if_ahead
        && read_oid(&repo, &branch_ref).is_some()
        && read_oid(&repo, &branch_ref) == read_oid(&repo, &tracking)
    {
        return Ok((Outcome::Pushed, report));
    }
    let start = Instant::now();
    let deadline = start + r.budget;
    // Full jitter, capped at 2 s: machines that collide spread out, and a push is never
    // idle for long.
    let policy = Policy {
        base: Duration::from_millis(50),
        max_delay: Duration::from_secs(2),
        ..Policy::default()
    };
    let mut schedule = Schedule::new(policy, None);
    let refspec = format!("+refs/heads/{branch}:{tracking}");
    // The first attempt of a push trusts what this machine last saw of the remote (the
    // remote-tracking ref, when it is the commit last pushed or taken from there) and pushes
    // without fetching: the push names that commit as the one it replaces
    // (--force-with-lease=BRANCH:COMMIT, a compare-and-swap; the new head descends from it,
    // so the update is a fast-forward), and a remote that moved meanwhile refuses it.
    let mut optimistic = only_if_ahead
        && read_oid(&repo, &tracking).is_some()
        && read_oid(&repo, &tracking) == read_oid(&repo, &pushed_ref);
    loop {
        // 1. What the remote has.
        let remote_head = if optimistic {
            read_oid(&repo, &tracking)
        } else {
            let fetch = cli(
                workdir,
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    &r.name,
                    &refspec,
                ],
                deadline,
            );
            match fetch {
                Ok((true, _, _)) => read_oid(&repo, &tracking),
                Ok((false, _, e)) if e.contains("couldn't find remote ref") => None,
                Ok((false, _, e)) => return Ok((Outcome::Unreachable(last_line(&e)), report)),
                Err(e) => return Ok((Outcome::Unreachable(e), report)),
            }
        };
        crash_point("fetched");
        if let Some(pushed) = read_oid(&repo, &pushed_ref) {
            let kept = match remote_head {
                Some(t) => t == pushed || repo.graph_descendant_of(t, pushed).unwrap_or(false),
                None => false,
            };
            if !kept {
                return Ok((
                    Outcome::Refused(format!(
                        "the history of {} {branch} was rewritten: it no longer holds commit \
                         {pushed}, which was pushed from here; nothing is pushed (the records \
                         stay committed here)",
                        r.name
                    )),
                    report,
                ));
            }
        }
        // 2. This branch on top of it, under the commit lock.
        let new_head = {
            let lock = lockfile::open(&r.lock, 0o644)?;
            let got = lockfile::lock_timeout(&lock, true, r.timeout)
                .map_err(|e| Error::io("taking the commit lock", &e))?;
            if !got {
                return Err(Error::temporary(format!(
                    "the commit lock {} stayed held past --timeout",
                    escape(&r.lock.to_string_lossy())
                )));
            }
            match integrate(&repo, workdir, r, &branch_ref, remote_head, &mut report)? {
                Ok(h) => h,
                Err(Conflict(m)) => return Ok((Outcome::Refused(m), report)),
            }
        };
        let Some(new_head) = new_head else {
            return Ok((Outcome::Pushed, report)); // an empty branch
        };
        if Some(new_head) == remote_head {
            set_ref(&repo, &pushed_ref, new_head);
            return Ok((Outcome::Pushed, report));
        }
        // 3. Push: accepted only as a fast-forward of what the remote has.
        let spec = format!("{new_head}:refs/heads/{branch}");
        let lease = remote_head.map(|t| format!("--force-with-lease=refs/heads/{branch}:{t}"));
        let mut args = vec!["push", "--porcelain", "--quiet"];
        if let Some(l) = lease.as_deref().filter(|_| optimistic) {
            args.push(l);
        }
        args.extend([r.name.as_str(), spec.as_str()]);
        match cli(workdir, &args, deadline) {
            Ok((true, _, _)) => {
                crash_point("pushed");
                set_ref(&repo, &tracking, new_head);
                set_ref(&repo, &pushed_ref, new_head);
                return Ok((Outcome::Pushed, report));
            }
            Ok((false, o, e)) => {
                let text = format!("{o}\n{e}");
                let rejected = text.contains("[rejected]")
                    && (text.contains("fetch first")
                        || text.contains("non-fast-forward")
                        || text.contains("stale info"));
                if text.contains("[remote rejected]") {
                    return Ok((
                        Outcome::Refused(format!("the remote refused the push: {}", last_line(&o))),
                        report,
                    ));
                }
                if !rejected {
                    return Ok((Outcome::Unreachable(last_line(&e)), report));
                }
                if optimistic {
                    optimistic = false;
                    continue; // the remote moved: fetch it, at once
                }
            }
            Err(e) => return Ok((Outcome::Unreachable(e), report)),
        }
        let delay = schedule.next_delay();
        if Instant::now() + delay >= deadline {
            return Ok((
                Outcome::Unreachable(format!(
                    "the remote's branch kept moving for {:.1}s (--push-timeout)",
                    start.elapsed().as_secs_f64()
                )),
                report,
            ));
        }
        std::thread::sleep(delay);
    }
}

fn set_ref(repo: &Repository, name: &str, id: Oid) {
    let _ = repo.reference(name, id, true, "elf-commit --push");
}

/// Brings the branch on top of `remote_head`: nothing when it already is, a fast-forward
/// when it has nothing of its own, else a replay. The new head (None for an unborn branch).
fn integrate(
    repo: &Repository,
    workdir: &Path,
    r: &Remote,
    branch_ref: &str,
    remote_head: Option<Oid>,
    report: &mut Report,
) -> Result<Result<Option<Oid>, Conflict>, Error> {
    let local = read_oid(repo, branch_ref);
    let (Some(local), Some(t)) = (local, remote_head) else {
        return Ok(Ok(local));
    };
    if local == t {
        return Ok(Ok(Some(local)));
    }
    // No common history (a home started here before it was given the remote): every local
    // commit is replayed.
    let base = match repo.merge_base(local, t) {
        Ok(b) => Some(b),
        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
        Err(e) => return Err(git_error("finding the common history with the remote", &e)),
    };
    // Commits came from the remote: their records' rows are for the scripts to import
    // (elf_import), told by this file, made before anything moves.
    if base != Some(t) {
        let _ = std::fs::write(repo.path().join("elf-import-pending"), "");
    }
    let new = if base == Some(local) {
        t
    } else {
        let commits = match rebase::local_commits(repo, base, local)? {
            Ok(c) => c,
            Err(c) => return Ok(Err(c)),
        };
        let t_tree = repo
            .find_commit(t)
            .and_then(|c| c.tree())
            .map_err(|e| git_error("reading the remote's head", &e))?;
        let l_tree = repo
            .find_commit(local)
            .and_then(|c| c.tree())
            .map_err(|e| git_error("reading HEAD", &e))?;
        let remote_ids = rebase::tree_ids(repo, &t_tree)?;
        let mut taken = remote_ids.clone();
        taken.extend(rebase::tree_ids(repo, &l_tree)?);
        // Checked on a fast-forward too: a record journaled before this machine took the
        // remote's entries may carry one of their ids.
        let collisions: Vec<_> = rebase::local_entries(repo, &commits)?
            .into_iter()
            .filter(|e| remote_ids.contains(&e.id))
            .collect();
        if collisions.is_empty() && base == Some(t) {
            return Ok(Ok(Some(local)));
        }
        let ids = renumber::move_heuristics(
            r.db.as_deref(),
            r.timeout,
            &collisions,
            &remote_ids,
            &taken,
        )?;
        crash_point("renumbered");
        let replayed = match rebase::replay(repo, &commits, t, &ids)? {
            Ok(x) => x,
            Err(c) => return Ok(Err(c)),
        };
        renumber::follow_renames(r.db.as_deref(), r.timeout, &replayed.renames)?;
        report.renumbered.extend(replayed.renumbered);
        report.renames.extend(replayed.renames);
        replayed.head.unwrap_or(t)
    };
    match apply(
        repo,
        workdir,
        branch_ref,
        local,
        new,
        r.timeout,
        &mut report.shifts,
    )? {
        Ok(()) => Ok(Ok(Some(new))),
        Err(c) => Ok(Err(c)),
    }
}

/// The lock file elf-write takes for `rel` (see elf-write's `locks.rs`: the FNV-1a hash of
/// the path relative to the repository, in `.git/elf-write-locks/`).
fn write_lock(workdir: &Path, rel: &str) -> Option<File> {
    let git = workdir.join(".git");
    let meta = std::fs::symlink_metadata(&git).ok()?;
    // SAFETY: geteuid cannot fail and touches no memory of ours.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me {
        return None;
    }
    let (folder, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let key = format!("{folder}/{name}");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let readable: String = name
        .bytes()
        .take(40)
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect();
    let dir = git.join("elf-write-locks");
    let _ = std::fs::create_dir(&dir);
    lockfile::open(&dir.join(format!("{h:016x}-{readable}.lock")), 0o666).ok()
}

/// What a file (or index entry) with `have` becomes when its commit moves from `old` to
/// `new` (`also`: the version an interrupted move left): `new`, or `new` with what was
/// appended after `old` (entries not committed yet). None: changes of its own.
fn carried(
    have: Option<&[u8]>,
    old: Option<&[u8]>,
    new: Option<&[u8]>,
    also: Option<&[u8]>,
) -> Option<Option<Vec<u8>>> {
    if have == old || have == new || (also.is_some() && have == also) {
        return Some(new.map(<[u8]>::to_vec));
    }
    match (have, old, new) {
        (Some(h), Some(o), Some(n)) if h.starts_with(o) => {
            let mut v = n.to_vec();
            v.extend_from_slice(&h[o.len()..]);
            Some(Some(v))
        }
        _ => None,
    }
}

/// Moves the branch from `old` to `new`: the work tree's files and the index entries of the
/// paths that differ first, then the branch (compare-and-swap).
fn apply(
    repo: &Repository,
    workdir: &Path,
    branch_ref: &str,
    old: Oid,
    new: Oid,
    timeout: Duration,
    shifts: &mut Vec<(String, u64, u64)>,
) -> Result<Result<(), Conflict>, Error> {
    let gitdir = repo.path().to_path_buf();
    let marker = gitdir.join("elf-rebase");
    let also = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| Oid::from_str(s.trim()).ok())
        .and_then(|id| repo.find_commit(id).ok())
        .and_then(|c| c.tree().ok());
    let tree = |id: Oid| {
        repo.find_commit(id)
            .and_then(|c| c.tree())
            .map_err(|e| git_error("reading a tree", &e))
    };
    let (ot, nt) = (tree(old)?, tree(new)?);
    let diff = repo
        .diff_tree_to_tree(Some(&ot), Some(&nt), None)
        .map_err(|e| git_error("comparing trees", &e))?;
    let paths: Vec<String> = diff
        .deltas()
        .filter_map(|d| d.new_file().path().or(d.old_file().path()))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    std::fs::write(&marker, format!("{new}\n"))
        .map_err(|e| Error::io("writing .git/elf-rebase", &e))?;
    let mut index = repo
        .index()
        .map_err(|e| git_error("reading the index", &e))?;
    let mut held = Vec::new();
    let mut plan = Vec::new();
    for p in &paths {
        if let Some(l) = write_lock(workdir, p) {
            if !lockfile::lock_timeout(&l, true, timeout).unwrap_or(false) {
                return Err(Error::temporary(format!(
                    "{p}: elf-write's lock stayed held"
                )));
            }
            held.push(l);
        }
        let o = rebase::blob_at(repo, &ot, p)?.map(|b| b.1);
        let n = rebase::blob_at(repo, &nt, p)?.map(|b| b.1);
        let a = match &also {
            Some(t) => rebase::blob_at(repo, t, p)?.map(|b| b.1),
            None => None,
        };
        let full = workdir.join(p);
        let have = match std::fs::read(&full) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format_args!("reading {p}"), &e)),
        };
        let own = || {
            Conflict(format!(
                "{p} has changes here that are not committed; commit or undo them, and run again"
            ))
        };
        let Some(file) = carried(have.as_deref(), o.as_deref(), n.as_deref(), a.as_deref()) else {
            return Ok(Err(own()));
        };
        let staged = match index.get_path(Path::new(p), 0) {
            Some(e) => Some(
                repo.find_blob(e.id)
                    .map_err(|e| git_error("reading the index", &e))?
                    .content()
                    .to_vec(),
            ),
            None => None,
        };
        let Some(entry) = carried(staged.as_deref(), o.as_deref(), n.as_deref(), a.as_deref())
        else {
            return Ok(Err(own()));
        };
        if let (Some(h), Some(o), Some(f)) = (&have, &o, &file) {
            if h.len() > o.len() && f.len() > h.len() && h.starts_with(o) {
                shifts.push((p.clone(), h.len() as u64, (f.len() - h.len()) as u64));
            }
        }
        plan.push((p.clone(), full, file, entry));
    }
    for (p, full, file, entry) in &plan {
        match file {
            Some(bytes) => {
                if let Some(dir) = full.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::io(format_args!("making the folder of {p}"), &e))?;
                }
                let tmp = full.with_file_name(format!(
                    ".{}.elf-rebase-{}",
                    full.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default(),
                    std::process::id()
                ));
                let mut f =
                    File::create(&tmp).map_err(|e| Error::io(format_args!("writing {p}"), &e))?;
                f.write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| Error::io(format_args!("writing {p}"), &e))?;
                std::fs::rename(&tmp, full)
                    .map_err(|e| Error::io(format_args!("writing {p}"), &e))?;
            }
            None => match std::fs::remove_file(full) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format_args!("removing {p}"), &e)),
            },
        }
        match entry {
            Some(bytes) => {
                let id = repo
                    .blob(bytes)
                    .map_err(|e| git_error("writing a blob", &e))?;
                let e = IndexEntry {
                    ctime: IndexTime::new(0, 0),
                    mtime: IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode: 0o100644,
                    uid: 0,
                    gid: 0,
                    file_size: 0,
                    id,
                    flags: 0,
                    flags_extended: 0,
                    path: Path::new(p).as_os_str().as_bytes().to_vec(),
                };
                index
                    .add(&e)
                    .map_err(|e| git_error("updating the index", &e))?;
            }
            None => {
                let _ = index.remove_path(Path::new(p));
            }
        }
    }
    crash_point("files");
    let until = Instant::now() + timeout;
    let mut schedule = Schedule::new(Policy::default(), None);
    loop {
        match index.write() {
            Ok(()) => break,
            Err(e) if e.code() == git2::ErrorCode::Locked && Instant::now() < until => {
                std::thread::sleep(schedule.next_delay().min(Duration::from_millis(200)));
            }
            Err(e) => return Err(git_error("writing the index", &e)),
        }
    }
    repo.reference_matching(
        branch_ref,
        new,
        true,
        old,
        "elf-commit --push: onto the remote's head",
    )
    .map_err(|e| git_error("moving the branch", &e))?;
    drop(held);
    let _ = std::fs::remove_file(&marker);
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_keep_what_was_appended_after_their_commit() {
        let c = |h: &[u8]| carried(Some(h), Some(b"a\n"), Some(b"a\nr\n"), None);
        assert_eq!(c(b"a\n"), Some(Some(b"a\nr\n".to_vec())));
        assert_eq!(c(b"a\nr\n"), Some(Some(b"a\nr\n".to_vec())));
        assert_eq!(c(b"a\nx\n"), Some(Some(b"a\nr\nx\n".to_vec())));
        assert_eq!(c(b"b\n"), None);
        assert_eq!(
            carried(None, None, Some(b"n"), None),
            Some(Some(b"n".to_vec()))
        );
    }
}
