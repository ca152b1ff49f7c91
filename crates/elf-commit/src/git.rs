//! The commit itself.
//!
//! One commit, for one record or a batch of them, goes like this:
//!
//! 1. take the serialising lock (`--lock`, a `flock(2)`), then `.git/index.lock` (see
//!    [`crate::indexlock`]); both within `--timeout`;
//! 2. copy the index to `.git/elf-commit-index` and make that copy the repository's index, so
//!    libgit2 hashes each named path through git's own filters and records its stat data (a
//!    process that wrote the index itself last time, and finds it unchanged, reuses the copy
//!    it still has in memory);
//! 3. the new tree is HEAD's tree with exactly the named paths' entries replaced, added or
//!    removed (see [`crate::tree`]: only the trees on the way to a changed path are written,
//!    and the trees seen are kept in memory by id, which no other process can make stale);
//!    the same tree as HEAD's means nothing new: no commit;
//! 4. the commit object is written (with 100 paths or more, every new object goes to memory
//!    first and then into one pack);
//! 5. the index copy, now holding the named paths' new entries and every other entry as it
//!    was, is written and renamed over `.git/index`: after the objects it names exist, before
//!    the branch moves (a crash in between leaves the paths staged, never a commit that the
//!    index would silently revert);
//! 6. the branch is moved under its ref lock only if it still points where HEAD pointed in
//!    step 3 (compare-and-swap). If something else moved it, steps 3 to 6 are done again on
//!    the new HEAD: nothing is ever lost;
//! 7. `index.lock` is removed and the serialising lock released.
//!
//! Records already waiting on standard input (without `--batch`) are committed one commit
//! each, in order, under one taking of the locks (steps 1 and 7 once): the index, holding the
//! new entries of all their paths, is written once, before the first branch move, and steps 3,
//! 4 and 6 are done for each record on top of the commit before it. Between two such groups
//! everything is read again (HEAD; the index, unless its file is the one this process wrote),
//! so what git or anyone else did meanwhile is seen.
//!
//! # Appends
//!
//! Several records of one drain may append to one file, and elf-write appends them all
//! before the first is committed; the user may have edited the file too, staged or not. A
//! record's own change to such a file is its entry: the marker line and content that end at
//! `write.end` (see [`Append`]), found there in the work tree (the marker at
//! `end - bytes - marker length`, at the start of a line). Its commit holds HEAD's file with
//! that entry appended (after a newline, when the file does not end with one), not the work
//! tree's file; when the entry cannot be found so, the job takes the file whole, as for any
//! path. Invariants:
//!
//! - a record's commit holds exactly its own entry more than the commit before it: nothing
//!   appended after it, none of the user's edits; a path with nothing yet (new, or empty)
//!   gets the file as the record left it, its first `end` bytes (the header with them);
//! - a commit that already holds the entry's marker line is left as it is (a replayed
//!   drain): no commit;
//! - the index entry of such a path gets the same entries appended to the index's own blob,
//!   so what the user staged stays staged and what they did not stays unstaged; the entry has
//!   no stat data (all zero), so git compares it with the file by content and shows the rest
//!   (the user's unstaged edits, later appends) as a change not staged, never as staged. An
//!   index without the path while HEAD has it (a deletion staged, a conflict) is left alone;
//! - a file is read for its entries once per group, only as far as the furthest `end`, and is
//!   not hashed whole when every record naming it appended to it;
//! - elf-write may be appending to the file meanwhile (a live drain): a file hashed whole that
//!   is not the size its entries were found in is looked at again (up to three times).
//!
//! A whole-file write (elf-write's create or replace) owns its file: the file is committed as
//! it is in the work tree, with whatever the user changed in it.
//!
//! libgit2 reads a file for as many bytes as it measured first, and fails when another
//! version is renamed over it in between; such a file is hashed again, as it is then.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Instant;

use git2::{Index, IndexEntry, Oid, Repository, Signature};

use elf_core::{Error, lockfile};

pub use crate::changes::Options;
use crate::changes::{Base, Changes, Git, Head, Resolved, hash_whole};
use crate::ident::Ident;
use crate::indexlock;
pub use crate::job::Job;
use crate::message::Message;
use crate::repository::{git_error, index_error, mandatory_extension, read_index, through_gitfile};
use crate::tree::Trees;
use crate::worktree::{FileId, install_index, settle_index};
use elf_core::paths::show as shown;

/// A commit of at least this many named paths writes its objects as one pack, not loose (the
/// number git uses for `transfer.unpackLimit`).
const PACK_MIN: usize = 100;

/// What became of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// HEAD afterwards: the new commit, or the commit that already had these paths' content;
    /// `None` on a branch with no commit yet.
    pub sha: Option<Oid>,
    /// No new commit was made for this job.
    pub unchanged: bool,
    /// Paths left out because git ignores them.
    pub skipped: Vec<PathBuf>,
}

/// What each job came to, in order (see [`Repo::commit`]).
pub type Outcomes = Vec<Result<Outcome, Error>>;

/// How [`Repo::commit`] takes its jobs.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// A job that fails gets its error and the others go on; else the list stops at it.
    pub keep_going: bool,
    /// One commit for each job, in order; else one commit for them all.
    pub separate: bool,
}

/// What a commit runs under: `index.lock`, the repository as this group sees it, and the
/// deadline for the locks still to take (the branch's ref lock).
#[derive(Clone, Copy)]
struct Locked<'a, 'r> {
    lock: &'a indexlock::IndexLock,
    git: &'a Git<'r>,
    deadline: Instant,
}

/// What a group of jobs came to, and whether the index file was replaced.
struct Ran {
    outcomes: Outcomes,
    index_written: bool,
}

/// A group's jobs as resolved, with their changes, once the index entries of their paths are
/// settled (`dirty`: the index changed).
struct Prepared {
    resolved: Vec<Result<Resolved, Error>>,
    changes: Changes,
    dirty: bool,
}

/// An open repository with its serialising lock.
pub struct Repo {
    repo: Repository,
    workdir: PathBuf,
    gitdir: PathBuf,
    serial: File,
    serial_path: PathBuf,
    opts: Options,
    ident: OnceCell<Ident>,
    /// The index as this process last wrote or read it, and which file that was.
    index_cache: RefCell<Option<(Index, Option<FileId>)>>,
    /// The file linked as `index.lock` to take it (none where hard links fail).
    holder: OnceCell<Option<indexlock::Holder>>,
    /// Trees seen lately, by id.
    trees: RefCell<Trees>,
}

impl Repo {
    /// Wraps an open repository; `lock` is the serialising lock file (default
    /// `.git/elf-commit.lock`).
    pub fn new(repo: Repository, lock: Option<PathBuf>, opts: Options) -> Result<Repo, Error> {
        let workdir = repo
            .workdir()
            .ok_or_else(|| {
                Error::usage(format!(
                    "{} is a bare repository; elf-commit needs a work tree",
                    shown(repo.path())
                ))
            })?
            .canonicalize()
            .map_err(|e| Error::io("finding the work tree", &e))?;
        let gitdir = repo.path().to_path_buf();
        let serial_path = match lock {
            Some(l) => through_gitfile(&l, &workdir, &gitdir).unwrap_or(l),
            None => gitdir.join("elf-commit.lock"),
        };
        let serial = lockfile::open(&serial_path, 0o644)?;
        Ok(Repo {
            repo,
            workdir,
            gitdir,
            serial,
            serial_path,
            opts,
            ident: OnceCell::new(),
            index_cache: RefCell::new(None),
            holder: OnceCell::new(),
            trees: RefCell::new(Trees::default()),
        })
    }

    /// The work tree, canonical.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Commits `jobs` together as one commit (or none, when nothing is new); with `separate`,
    /// one commit for each job, in order, each as if it had been committed on its own (the
    /// locks are taken once, and the index written once, before the first commit).
    ///
    /// The outer error concerns them all (a lock not obtained in time, an I/O error). A job
    /// whose paths cannot be committed (ignored under `--ignored error`, missing and untracked,
    /// a nested repository) gets its own error and is left out; without `keep_going` the list
    /// stops at that job and the jobs after it are not attempted. With `separate`, an error
    /// after some of the commits were made is the error of the jobs not committed yet.
    pub fn commit(&self, jobs: &[Job], mode: Mode) -> Result<Outcomes, Error> {
        let Mode {
            keep_going,
            separate,
        } = mode;
        let named: usize = jobs.iter().map(|j| j.paths.len()).sum();
        if separate && jobs.len() > 1 && named >= PACK_MIN {
            // Large jobs: each as it comes, one pack for each when it is large itself.
            let mut out = Vec::with_capacity(jobs.len());
            for job in jobs {
                let r = self
                    .commit(
                        std::slice::from_ref(job),
                        Mode {
                            keep_going,
                            separate: false,
                        },
                    )?
                    .pop()
                    .ok_or_else(|| Error::internal("no outcome for the commit"))?;
                let failed = r.is_err();
                out.push(r);
                if failed && !keep_going {
                    break;
                }
            }
            return Ok(out);
        }
        let start = Instant::now();
        let got = lockfile::lock_timeout(&self.serial, true, self.opts.timeout)
            .map_err(|e| Error::io(format_args!("locking {}", shown(&self.serial_path)), &e))?;
        if !got {
            return Err(Error::temporary(format!(
                "lock {} is held by another process; gave up after {:?}",
                shown(&self.serial_path),
                self.opts.timeout
            )));
        }
        let result = self.commit_locked(jobs, mode, start + self.opts.timeout);
        let _ = lockfile::unlock(&self.serial);
        result
    }

    fn commit_locked(
        &self,
        jobs: &[Job],
        mode: Mode,
        deadline: Instant,
    ) -> Result<Outcomes, Error> {
        let wait = indexlock::Wait {
            deadline,
            timeout: self.opts.timeout,
            stale: self.opts.stale,
        };
        let holder = self
            .holder
            .get_or_init(|| indexlock::Holder::create(&self.gitdir).ok());
        let lock = indexlock::acquire(&self.gitdir, wait, holder.as_ref())?;
        let index_path = self.gitdir.join("index");
        let scratch = self.gitdir.join("elf-commit-index");
        let on_disk = FileId::of(&index_path);
        let named: usize = jobs.iter().map(|j| j.paths.len()).sum();
        let outcomes = if named >= PACK_MIN {
            // Many new objects: into memory, then one pack, as git keeps a large push.
            self.index_cache.replace(None);
            let repo = Repository::open(&self.workdir)
                .map_err(|e| git_error("opening the repository", &e))?;
            let odb = repo
                .odb()
                .map_err(|e| git_error("opening the repository", &e))?;
            let mempack = odb
                .add_new_mempack_backend(1000)
                .map_err(|e| git_error("opening the repository", &e))?;
            let git = Git {
                repo: &repo,
                workdir: &self.workdir,
                opts: self.opts,
                pack: Some(&mempack),
                trees: &self.trees,
                memo: RefCell::default(),
            };
            let mut idx = self.load_index(&index_path, &scratch)?;
            repo.set_index(&mut idx)
                .map_err(|e| git_error("reading the index", &e))?;
            let at = Locked {
                lock: &lock,
                git: &git,
                deadline,
            };
            let ran = self.run(&at, &mut idx, jobs, mode)?;
            if !ran.index_written {
                let _ = std::fs::remove_file(&scratch);
            }
            ran.outcomes
        } else {
            // The index this process wrote last time is still the index: reuse it as it is in
            // memory instead of copying and parsing it again. (libgit2 owns the index it was
            // given until another replaces it: giving it the same one again would disown it.)
            let mut idx = match self.index_cache.take() {
                Some((idx, id)) if on_disk.is_some() && id == on_disk => idx,
                _ => {
                    let mut idx = self.load_index(&index_path, &scratch)?;
                    self.repo
                        .set_index(&mut idx)
                        .map_err(|e| git_error("reading the index", &e))?;
                    idx
                }
            };
            let git = Git {
                repo: &self.repo,
                workdir: &self.workdir,
                opts: self.opts,
                pack: None,
                trees: &self.trees,
                memo: RefCell::default(),
            };
            let at = Locked {
                lock: &lock,
                git: &git,
                deadline,
            };
            let ran = self.run(&at, &mut idx, jobs, mode)?;
            if ran.index_written {
                self.index_cache
                    .replace(Some((idx, FileId::of(&index_path))));
            } else {
                let _ = std::fs::remove_file(&scratch);
                self.index_cache.replace(Some((idx, on_disk)));
            }
            ran.outcomes
        };
        drop(lock);
        Ok(outcomes)
    }

    /// The commit itself, under both locks: the outcomes, and whether the index was replaced.
    fn run(
        &self,
        at: &Locked<'_, '_>,
        idx: &mut Index,
        jobs: &[Job],
        mode: Mode,
    ) -> Result<Ran, Error> {
        let git = at.git;
        let Mode {
            keep_going,
            separate,
        } = mode;
        let index_path = self.gitdir.join("index");
        let scratch = self.gitdir.join("elf-commit-index");
        self.trees.borrow_mut().next_generation();
        let mut head = git.head()?;
        let mut base = git.tree(head.oid)?;

        // Which paths each job names, as files to add or remove; nothing is changed yet.
        let mut resolved: Vec<Result<Resolved, Error>> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let r = git.resolve(job, &base, idx);
            let failed = r.is_err();
            resolved.push(r);
            if failed && !keep_going {
                break;
            }
        }

        // The entries the jobs' own records appended, which their commits take alone (see
        // `tails`), and the paths taken whole, hashed through git's filters into the index
        // with stat data (a path that every job naming it appended to is not read whole). A
        // file appended to between the two (the stage before this one still writing) is
        // looked at again, so that a record's commit does not take an entry appended after
        // its own.
        let mut olds: BTreeMap<PathBuf, Option<IndexEntry>> = BTreeMap::new();
        let mut attempts = 0;
        let changes = loop {
            let (tails, sizes) = git.tails(jobs, &resolved)?;
            let whole = hash_whole(idx, &self.workdir, &resolved, &tails, &mut olds)?;
            attempts += 1;
            // Hashed whole, and not as it was measured: another size (the index keeps sizes
            // modulo 2^32, as git does), or a blob larger than the size libgit2 saw (git's
            // filters only ever shrink a file on its way in).
            let grew = sizes.iter().any(|(p, &size)| {
                matches!(whole.get(p), Some(Some(_)))
                    && idx.get_path(p, 0).is_some_and(|e| {
                        e.file_size != size as u32
                            || (size <= u64::from(u32::MAX)
                                && git.blob_size(e.id) > u64::from(e.file_size))
                    })
            });
            if !grew || attempts == 3 {
                break Changes { whole, tails };
            }
        };

        // Each path as the last job naming it leaves it; the index gets the same changes.
        let mut plan = git.plan(&base, &resolved, &changes)?;
        let want = git.index_plan(&base, &resolved, &changes, &olds)?;
        let dirty = settle_index(idx, &olds, &changes.whole, &want)?;

        if separate {
            let prepared = Prepared {
                resolved,
                changes,
                dirty,
            };
            return self.each(at, idx, jobs, prepared, head);
        }

        let mut index_written = false;
        let (sha, changed) = loop {
            let tree_id = git.build_tree(&base, &plan.last)?;
            let changed: Vec<bool> = resolved
                .iter()
                .zip(&changes.tails)
                .zip(&plan.advanced)
                .map(|((r, mine), advanced)| {
                    r.as_ref().is_ok_and(|r| {
                        *advanced
                            || r.targets.iter().any(|t| {
                                !mine.contains_key(t.path())
                                    && git.differs(&base, t.path(), &plan.last)
                            })
                    })
                })
                .collect();
            let Some(tree_id) = tree_id else {
                break (head.oid, changed);
            };
            let msgs: Vec<&Message> = jobs
                .iter()
                .zip(&changed)
                .filter(|(_, c)| **c)
                .map(|(j, _)| &j.message)
                .collect();
            let message = Message::combine(&msgs);
            let mut install = || -> Result<(), Error> {
                if dirty && !index_written {
                    install_index(idx, &scratch, &index_path)?;
                    index_written = true;
                }
                Ok(())
            };
            let (new, moved) = self.commit_on(at, &head, &message, tree_id, &mut install)?;
            match moved {
                None => break (Some(new), changed),
                Some(moved) => {
                    // Someone else committed meanwhile: build again on top of theirs.
                    head = moved;
                    base = git.tree(head.oid)?;
                    plan = git.plan(&base, &resolved, &changes)?;
                }
            }
        };
        if dirty && !index_written {
            git.flush()?;
            install_index(idx, &scratch, &index_path)?;
            index_written = true;
        }
        let outcomes = resolved
            .into_iter()
            .zip(changed)
            .map(|(r, changed)| {
                r.map(|r| Outcome {
                    sha,
                    unchanged: !changed,
                    skipped: r.skipped,
                })
            })
            .collect();
        Ok(Ran {
            outcomes,
            index_written,
        })
    }

    /// One commit for each job, in order (see [`Repo::run`], which resolved the jobs and
    /// updated the index entries of all their paths). A job's tree is built on the commit
    /// before it, with its paths as [`Git::job_changes`] gives them: a file that later jobs
    /// appended to after this job's entry is committed up to this job's entry.
    fn each(
        &self,
        at: &Locked<'_, '_>,
        idx: &mut Index,
        jobs: &[Job],
        prepared: Prepared,
        mut head: Head,
    ) -> Result<Ran, Error> {
        let git = at.git;
        let Prepared {
            resolved,
            changes,
            dirty,
        } = prepared;
        let changes = &changes;
        let index_path = self.gitdir.join("index");
        let scratch = self.gitdir.join("elf-commit-index");
        let mut base = git.tree(head.oid)?;
        let mut index_written = false;
        let mut committed = false;
        let mut outcomes = Vec::with_capacity(resolved.len());
        let mut failure: Option<Error> = None;
        for (j, (job, r)) in jobs.iter().zip(resolved).enumerate() {
            let r = match (r, &failure) {
                (_, Some(e)) => {
                    outcomes.push(Err(e.clone()));
                    continue;
                }
                (Err(e), None) => {
                    outcomes.push(Err(e));
                    continue;
                }
                (Ok(r), None) => r,
            };
            let step = loop {
                let tree_id = match git
                    .job_changes(&base, j, &r, changes)
                    .and_then(|mine| git.build_tree(&base, &mine))
                {
                    Ok(Some(t)) => t,
                    Ok(None) => break Ok((head.oid, false)),
                    Err(e) => break Err(e),
                };
                let mut install = || -> Result<(), Error> {
                    if dirty && !index_written {
                        install_index(idx, &scratch, &index_path)?;
                        index_written = true;
                    }
                    Ok(())
                };
                let made = self.commit_on(at, &head, &job.message, tree_id, &mut install);
                match made {
                    Ok((new, None)) => {
                        head.oid = Some(new);
                        base = Base {
                            root: Some(tree_id),
                        };
                        break Ok((Some(new), true));
                    }
                    // Someone else committed meanwhile: build again on top of theirs.
                    Ok((_, Some(moved))) => match git.tree(moved.oid) {
                        Ok(b) => {
                            head = moved;
                            base = b;
                        }
                        Err(e) => break Err(e),
                    },
                    Err(e) => break Err(e),
                }
            };
            match step {
                Ok((sha, changed)) => {
                    committed |= changed;
                    outcomes.push(Ok(Outcome {
                        sha,
                        unchanged: !changed,
                        skipped: r.skipped,
                    }));
                }
                // Nothing committed yet: the whole group failed, as one commit would have.
                Err(e) if !committed && !index_written => return Err(e),
                Err(e) => {
                    outcomes.push(Err(e.clone()));
                    failure = Some(e);
                }
            }
        }
        if dirty && !index_written && failure.is_none() {
            git.flush()?;
            install_index(idx, &scratch, &index_path)?;
            index_written = true;
        }
        Ok(Ran {
            outcomes,
            index_written,
        })
    }

    /// A copy of the index, opened as libgit2's index of the repository (so that paths are
    /// hashed through git's filters), to be written and renamed over the index.
    fn load_index(&self, index_path: &Path, scratch: &Path) -> Result<Index, Error> {
        let _ = std::fs::remove_file(self.gitdir.join("elf-commit-index.lock"));
        match std::fs::copy(index_path, scratch) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let _ = std::fs::remove_file(scratch);
            }
            Err(e) => {
                return Err(Error::io(format_args!("copying {}", shown(index_path)), &e));
            }
        }
        read_index(&self.gitdir, scratch)
    }

    /// Checks, changing nothing but creating the lock file, that a commit could be made here:
    /// the repository's format (checked on opening) and its index are supported, and an
    /// identity is configured. A split or sparse index is read from a copy.
    pub fn check(&self) -> Result<(), Error> {
        let index_path = self.gitdir.join("index");
        if index_path.exists() {
            match Index::open(&index_path) {
                Ok(_) => {}
                Err(e) if mandatory_extension(&e).is_some() => {
                    let copy = self
                        .gitdir
                        .join(format!("elf-commit-check.{}", std::process::id()));
                    let got = std::fs::copy(&index_path, &copy)
                        .map_err(|e| Error::io(format_args!("copying {}", shown(&index_path)), &e))
                        .and_then(|_| read_index(&self.gitdir, &copy));
                    let _ = std::fs::remove_file(&copy);
                    got?;
                }
                Err(e) => return Err(index_error(&e)),
            }
        }
        self.signatures().map(drop)
    }

    /// Writes the commit of `tree_id` on `head` with `message`, puts the new objects on disk,
    /// runs `before_move` (which installs the index: before the branch moves, so that a crash
    /// in between leaves paths staged, never a commit the index would silently revert), then
    /// moves the branch by compare-and-swap. `Some(head)` when something else moved it
    /// meanwhile (the branch is left as it was).
    fn commit_on(
        &self,
        at: &Locked<'_, '_>,
        head: &Head,
        message: &Message,
        tree_id: Oid,
        before_move: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<(Oid, Option<Head>), Error> {
        let Locked {
            lock,
            git,
            deadline,
        } = *at;
        let (author, committer) = self.signatures()?;
        let parents: Vec<Oid> = head.oid.into_iter().collect();
        let new = self
            .trees
            .borrow_mut()
            .write_commit(
                git.repo,
                &author,
                &committer,
                &message.text(),
                tree_id,
                &parents,
            )
            .map_err(|e| git_error("writing the commit", &e))?;
        git.flush()?;
        before_move()?;
        let initial = if head.oid.is_none() { " (initial)" } else { "" };
        let reflog = format!("commit{initial}: {}", message.subject);
        let moved = git.move_ref(lock, head, new, &committer, &reflog, deadline)?;
        Ok((new, moved))
    }

    /// Author and committer, from the environment and git's configuration.
    fn signatures(&self) -> Result<(Signature<'static>, Signature<'static>), Error> {
        if self.ident.get().is_none() {
            let cfg = self
                .repo
                .config()
                .map_err(|e| git_error("reading git's configuration", &e))?;
            let _ = self.ident.set(Ident::load(&cfg)?);
        }
        let ident = self
            .ident
            .get()
            .ok_or_else(|| Error::internal("identity not loaded"))?;
        ident.signatures()
    }
}
