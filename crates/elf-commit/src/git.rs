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
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Display;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use git2::{
    Buf, Config, ErrorClass, ErrorCode, Index, IndexEntry, IndexTime, Mempack, ObjectType, Oid,
    Repository, Signature, Time,
};

use elf_core::text::escape;
use elf_core::{Error, lockfile, marker};

use crate::indexlock;
pub use crate::job::{Append, Job};
use crate::message::{Message, parse_date};
use crate::tree::{Entry, Trees};
use elf_core::paths::show as shown;

/// A commit of at least this many named paths writes its objects as one pack, not loose (the
/// number git uses for `transfer.unpackLimit`).
const PACK_MIN: usize = 100;

/// How commits are made.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long to wait for the locks in all.
    pub timeout: Duration,
    /// Remove an `index.lock` that nobody has open once it is this old; `None` never.
    pub stale: Option<Duration>,
    /// A gitignored path is an error (65) rather than skipped.
    pub ignored_error: bool,
}

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

/// Opens the repository: exactly `dir` when given, else the one containing the current
/// directory. With `init`, creates it (at `dir`, or here) when there is none.
pub fn open(dir: Option<&Path>, init: bool) -> Result<Repository, Error> {
    // Every object elf-commit links into a tree or commit was just written or read from the
    // repository, so libgit2 need not look each one up again.
    git2::opts::strict_object_creation(false);
    // Keep trees of any reasonable size in libgit2's object cache (the default stops at 4 KiB,
    // so a folder of a thousand entries would be read and inflated again for every lookup).
    // SAFETY: sets a libgit2 global before any thread exists; elf-commit starts none.
    let _ = unsafe { git2::opts::set_cache_object_limit(ObjectType::Tree, 16 << 20) };
    // zlib takes a few hundred KiB for every object written; let malloc keep that memory
    // instead of returning it to the kernel and faulting it in again for the next object.
    // SAFETY: mallopt only tunes glibc's allocator; it is called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    let (found, place) = match dir {
        Some(d) => (Repository::open(d), d.to_path_buf()),
        None => {
            let here = std::env::current_dir()
                .map_err(|e| Error::io("finding the current directory", &e))?;
            (Repository::discover(&here), here)
        }
    };
    if found.is_err() {
        if let Some(e) = broken_gitfile(&place) {
            return Err(e);
        }
    }
    match found {
        Ok(r) => Ok(r),
        Err(e) if e.code() == ErrorCode::NotFound && dir.is_some() && !init => {
            // Inside another repository's work tree: say so, and commit nothing there.
            let outer = Repository::discover(&place)
                .ok()
                .and_then(|r| r.workdir().map(Path::to_path_buf));
            Err(Error::no_input(match outer {
                Some(top) => format!(
                    "{} is not a git repository: it is a folder in the work tree {} (give \
                     --repo {}, or --init to make it a repository of its own)",
                    shown(&place),
                    shown(&top),
                    shown(&top)
                ),
                None => format!(
                    "{} is not a git repository (use --init to create one)",
                    shown(&place)
                ),
            }))
        }
        Err(e) if e.code() == ErrorCode::NotFound && init => {
            Repository::init(&place).map_err(|e| {
                git_error(
                    format_args!("creating a repository in {}", shown(&place)),
                    &e,
                )
            })
        }
        Err(e) if e.code() == ErrorCode::NotFound => Err(Error::no_input(match dir {
            Some(_) => format!(
                "{} is not a git repository (use --init to create one)",
                shown(&place)
            ),
            None => format!(
                "no git repository at or above {} (use --repo DIR, or --init to create one)",
                shown(&place)
            ),
        })),
        Err(e) => Err(unsupported_repository(&e).unwrap_or_else(|| {
            git_error(
                format_args!("opening the repository at {}", shown(&place)),
                &e,
            )
        })),
    }
}

/// A lock file named `.git/NAME` in the work tree when `.git` there is a file (a linked
/// worktree, a submodule): `NAME` in the git directory it names, as git's own files are.
fn through_gitfile(lock: &Path, workdir: &Path, gitdir: &Path) -> Option<PathBuf> {
    let name = lock.file_name()?;
    let dotgit = lock.parent()?;
    if dotgit.file_name()? != ".git" || !std::fs::symlink_metadata(dotgit).ok()?.is_file() {
        return None;
    }
    let top = match dotgit.parent()? {
        p if p.as_os_str().is_empty() => Path::new("."),
        p => p,
    };
    (top.canonicalize().ok()? == workdir).then(|| gitdir.join(name))
}

/// When `place/.git` is a file (a linked worktree, a submodule, `git init
/// --separate-git-dir`) that names no git directory, why: the repository is broken, not
/// missing, so nothing is created over it (git refuses too).
fn broken_gitfile(place: &Path) -> Option<Error> {
    use std::io::Read;
    let dotgit = place.join(".git");
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&dotgit)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = Vec::new();
    let _ = (&mut f).take(4096).read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    let Some(target) = text.lines().next().and_then(|l| l.strip_prefix("gitdir:")) else {
        return Some(Error::no_input(format!(
            "{} is a file but not a \"gitdir: PATH\" line; nothing was created",
            shown(&dotgit)
        )));
    };
    let target = place.join(target.trim());
    if target.join("HEAD").exists() {
        return None;
    }
    Some(Error::no_input(format!(
        "{} names the git directory {}, which is not one (the worktree or submodule it \
         belonged to is gone); nothing was created",
        shown(&dotgit),
        shown(&target)
    )))
}

/// The exit status of a repository elf-commit cannot work in (`EX_UNAVAILABLE`): a permanent
/// failure, never retried, that no later run completes.
pub const UNSUPPORTED: u8 = 69;

/// `unsupported: WHAT` with exit status [`UNSUPPORTED`].
pub fn unsupported(what: impl Display) -> Error {
    Error::new(UNSUPPORTED, format!("unsupported: {what}"))
}

/// The repository format libgit2 refused to open, as an unsupported error; `None` when the
/// error is of another kind.
fn unsupported_repository(e: &git2::Error) -> Option<Error> {
    let msg = e.message();
    if let Some(rest) = msg.strip_prefix("unknown object format '") {
        let format = escape(rest.trim_end_matches('\'')).into_owned();
        return Some(unsupported(format_args!(
            "{format} object format (extensions.objectFormat = {format}); elf-commit works in \
             SHA-1 repositories only"
        )));
    }
    if let Some(name) = msg.strip_prefix("unsupported extension name ") {
        return Some(unsupported(format_args!(
            "repository extension {}",
            escape(name)
        )));
    }
    if msg.starts_with("unsupported repository version") {
        return Some(unsupported(escape(msg)));
    }
    None
}

/// Reads the index file at `file`, a copy elf-commit owns. An index libgit2 cannot read
/// because git wrote it split (`core.splitIndex`: the `link` extension) or sparse
/// (`index.sparse`: `sdir`) is first rewritten whole, in place, by git itself
/// (`git update-index --no-split-index` with `index.sparse` off): git reads a whole index as
/// well, and splits it or makes it sparse again the next time it writes it. Any other index
/// libgit2 cannot read (another version, another mandatory extension) is unsupported (69).
fn read_index(gitdir: &Path, file: &Path) -> Result<Index, Error> {
    let e = match Index::open(file) {
        Ok(idx) => return Ok(idx),
        Err(e) => e,
    };
    let Some(ext) = mandatory_extension(&e) else {
        return Err(index_error(&e));
    };
    let what = match ext.as_str() {
        "link" => "split index (core.splitIndex)",
        "sdir" => "sparse index (index.sparse)",
        _ => {
            return Err(unsupported(format_args!(
                "index extension '{}'",
                escape(&ext)
            )));
        }
    };
    rewrite_whole(gitdir, file).map_err(|why| unsupported(format_args!("{what}: {why}")))?;
    Index::open(file).map_err(|e| match mandatory_extension(&e) {
        Some(_) => unsupported(format_args!("{what}: git left it {what}")),
        None => index_error(&e),
    })
}

/// The mandatory index extension libgit2 refused, from its error.
fn mandatory_extension(e: &git2::Error) -> Option<String> {
    let rest = e
        .message()
        .split("unsupported mandatory extension: '")
        .nth(1)?;
    Some(rest.split('\'').next().unwrap_or(rest).to_string())
}

/// An index that cannot be read: unsupported when libgit2 names its version as the reason.
fn index_error(e: &git2::Error) -> Error {
    if e.message().contains("incorrect header version") {
        unsupported(format_args!("index version ({})", escape(e.message())))
    } else {
        git_error("reading the index", e)
    }
}

/// Has git rewrite the index file `file` of the repository at `gitdir` as one whole index,
/// neither split nor sparse. Git is run with its hooks and helpers off (no fsmonitor), on
/// this file only (`GIT_INDEX_FILE`): it takes `file.lock`, never `index.lock`.
fn rewrite_whole(gitdir: &Path, file: &Path) -> Result<(), String> {
    let out = std::process::Command::new("git")
        .env("GIT_DIR", gitdir)
        .env("GIT_INDEX_FILE", file)
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_COMMON_DIR")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .args([
            "-c",
            "core.splitIndex=false",
            "-c",
            "index.sparse=false",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "advice.sparseIndexExpanded=false",
            "update-index",
            "--no-split-index",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("git, needed to read it, could not be run: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    Err(format!(
        "git could not rewrite it whole ({}): {}",
        out.status,
        escape(line.trim())
    ))
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
    pub fn commit(
        &self,
        jobs: &[Job],
        keep_going: bool,
        separate: bool,
    ) -> Result<Vec<Result<Outcome, Error>>, Error> {
        let named: usize = jobs.iter().map(|j| j.paths.len()).sum();
        if separate && jobs.len() > 1 && named >= PACK_MIN {
            // Large jobs: each as it comes, one pack for each when it is large itself.
            let mut out = Vec::with_capacity(jobs.len());
            for job in jobs {
                let r = self
                    .commit(std::slice::from_ref(job), keep_going, false)?
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
        let result = self.commit_locked(jobs, keep_going, separate, start + self.opts.timeout);
        let _ = lockfile::unlock(&self.serial);
        result
    }

    fn commit_locked(
        &self,
        jobs: &[Job],
        keep_going: bool,
        separate: bool,
        deadline: Instant,
    ) -> Result<Vec<Result<Outcome, Error>>, Error> {
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
            let (outcomes, written) =
                self.run(&lock, &git, &mut idx, jobs, keep_going, separate, deadline)?;
            if !written {
                let _ = std::fs::remove_file(&scratch);
            }
            outcomes
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
            let (outcomes, written) =
                self.run(&lock, &git, &mut idx, jobs, keep_going, separate, deadline)?;
            if written {
                self.index_cache
                    .replace(Some((idx, FileId::of(&index_path))));
            } else {
                let _ = std::fs::remove_file(&scratch);
                self.index_cache.replace(Some((idx, on_disk)));
            }
            outcomes
        };
        drop(lock);
        Ok(outcomes)
    }

    /// The commit itself, under both locks: the outcomes, and whether the index was replaced.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn run(
        &self,
        lock: &indexlock::IndexLock,
        git: &Git<'_>,
        idx: &mut Index,
        jobs: &[Job],
        keep_going: bool,
        separate: bool,
        deadline: Instant,
    ) -> Result<(Vec<Result<Outcome, Error>>, bool), Error> {
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
            return self.each(
                lock, git, idx, jobs, resolved, &changes, dirty, head, deadline,
            );
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
            let (new, moved) =
                self.commit_on(git, lock, &head, &message, tree_id, deadline, &mut install)?;
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
        Ok((outcomes, index_written))
    }

    /// One commit for each job, in order (see [`Repo::run`], which resolved the jobs and
    /// updated the index entries of all their paths). A job's tree is built on the commit
    /// before it, with its paths as [`Git::job_changes`] gives them: a file that later jobs
    /// appended to after this job's entry is committed up to this job's entry.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn each(
        &self,
        lock: &indexlock::IndexLock,
        git: &Git<'_>,
        idx: &mut Index,
        jobs: &[Job],
        resolved: Vec<Result<Resolved, Error>>,
        changes: &Changes,
        dirty: bool,
        mut head: Head,
        deadline: Instant,
    ) -> Result<(Vec<Result<Outcome, Error>>, bool), Error> {
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
                let made = self.commit_on(
                    git,
                    lock,
                    &head,
                    &job.message,
                    tree_id,
                    deadline,
                    &mut install,
                );
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
        Ok((outcomes, index_written))
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
    #[allow(clippy::too_many_arguments)]
    fn commit_on(
        &self,
        git: &Git<'_>,
        lock: &indexlock::IndexLock,
        head: &Head,
        message: &Message,
        tree_id: Oid,
        deadline: Instant,
        before_move: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<(Oid, Option<Head>), Error> {
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
            let ident = Ident {
                author: Person::load(&cfg, "author")?,
                committer: Person::load(&cfg, "committer")?,
            };
            let _ = self.ident.set(ident);
        }
        let ident = self
            .ident
            .get()
            .ok_or_else(|| Error::internal("identity not loaded"))?;
        Ok((ident.author.signature()?, ident.committer.signature()?))
    }
}

/// The repository handle one commit works through: the long-lived one, or, for a commit of
/// many files, one whose new objects go to memory first and then into one pack.
struct Git<'r> {
    repo: &'r Repository,
    workdir: &'r Path,
    opts: Options,
    pack: Option<&'r Mempack<'r>>,
    trees: &'r RefCell<Trees>,
    /// [`Git::after_tails`] by what the path held, the job and the path.
    memo: RefCell<Memo>,
}

type Memo = BTreeMap<(Option<Oid>, usize, PathBuf), Option<(Oid, u32)>>;

impl Git<'_> {
    /// Writes the objects made so far in memory as one pack (nothing for the long-lived handle,
    /// which writes loose objects as git does).
    fn flush(&self) -> Result<(), Error> {
        let Some(mempack) = self.pack else {
            return Ok(());
        };
        let fail = |e: git2::Error| git_error("writing a pack", &e);
        let mut buf = Buf::new();
        mempack.dump(self.repo, &mut buf).map_err(fail)?;
        // An empty pack is a 12-byte header and a 20-byte checksum.
        if buf.len() > 32 {
            let odb = self.repo.odb().map_err(fail)?;
            let mut writer = odb.packwriter().map_err(fail)?;
            writer
                .write_all(&buf)
                .map_err(|e| Error::io("writing a pack", &e))?;
            writer.commit().map_err(fail)?;
        }
        mempack.reset().map_err(fail)
    }

    /// The branch HEAD names (or HEAD itself when detached) and where it points.
    fn head(&self) -> Result<Head, Error> {
        let r = self
            .repo
            .find_reference("HEAD")
            .map_err(|e| git_error("reading HEAD", &e))?;
        if r.kind() == Some(git2::ReferenceType::Symbolic) {
            let name = r
                .symbolic_target()
                .ok_or_else(|| Error::data("HEAD names a branch that is not UTF-8"))?
                .to_string();
            let oid = self.ref_target(&name)?;
            Ok(Head { refname: name, oid })
        } else {
            Ok(Head {
                refname: "HEAD".into(),
                oid: r.target(),
            })
        }
    }

    fn ref_target(&self, name: &str) -> Result<Option<Oid>, Error> {
        match self.repo.refname_to_id(name) {
            Ok(oid) => Ok(Some(oid)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(git_error(format_args!("reading {name}"), &e)),
        }
    }

    /// The tree of a commit (none on an unborn branch).
    fn tree(&self, commit: Option<Oid>) -> Result<Base, Error> {
        let Some(oid) = commit else {
            return Ok(Base { root: None });
        };
        let root = self
            .trees
            .borrow_mut()
            .commit_tree(self.repo, oid)
            .map_err(|e| git_error("reading HEAD", &e))?;
        Ok(Base { root: Some(root) })
    }

    /// The entry at `p` in `base` (none when it cannot be read, as when it is not there).
    fn entry(&self, base: &Base, p: &Path) -> Option<Entry> {
        let root = base.root?;
        self.trees
            .borrow_mut()
            .get(self.repo, root, p)
            .ok()
            .flatten()
    }

    /// Whether `p` in the new tree differs from `base`.
    fn differs(
        &self,
        base: &Base,
        p: &Path,
        changes: &BTreeMap<PathBuf, Option<(Oid, u32)>>,
    ) -> bool {
        let now = self.entry(base, p).map(|e| (e.id, e.mode));
        match changes.get(p) {
            Some(new) => *new != now,
            None => false,
        }
    }

    /// For each job, the entries its own record appended to files it commits, found in the
    /// work tree: for an append the record reported (`write.end`, see [`Append`]) to a file the
    /// job commits, when the file's first `end` bytes end with the record's marker line and
    /// `bytes` bytes after it. The file is read once for all the jobs, as far as the furthest
    /// such `end`. A job with an append that cannot be found so takes that file whole; so does
    /// every job when the file cannot be read. Also returns the size each such file had.
    fn tails(
        &self,
        jobs: &[Job],
        resolved: &[Result<Resolved, Error>],
    ) -> Result<(Tails, BTreeMap<PathBuf, u64>), Error> {
        let mut out: Tails = vec![BTreeMap::new(); resolved.len()];
        let mut sizes = BTreeMap::new();
        // By file, every append of every job that commits it.
        let mut claims: BTreeMap<&Path, Vec<(usize, &Append)>> = BTreeMap::new();
        for (j, (job, r)) in jobs.iter().zip(resolved).enumerate() {
            let Ok(r) = r else { continue };
            for a in &job.appends {
                let named = r
                    .targets
                    .iter()
                    .any(|t| matches!(t, Target::Add(p) if *p == a.path));
                if named {
                    claims.entry(a.path.as_path()).or_default().push((j, a));
                }
            }
        }
        for (path, claims) in claims {
            let Some((data, mode, size)) = read_prefix(&self.workdir.join(path), &claims) else {
                continue;
            };
            sizes.insert(path.to_path_buf(), size);
            let data = Rc::new(data);
            let mut whole = BTreeSet::new();
            for &(j, a) in &claims {
                let found = usize::try_from(a.end)
                    .ok()
                    .filter(|&end| end <= data.len())
                    .filter(|&end| marker::ends_with_entry(&data[..end], &a.marker, a.bytes));
                let start = found.and_then(|end| {
                    let bytes = usize::try_from(a.bytes).ok()?;
                    Some((end.checked_sub(bytes)?.checked_sub(a.marker.len())?, end))
                });
                let Some((start, end)) = start else {
                    whole.insert(j);
                    continue;
                };
                let entry = self.clean(path, &data[start..end])?;
                out[j].entry(path.to_path_buf()).or_default().push(Tail {
                    entry,
                    marker: a.marker.clone(),
                    data: Rc::clone(&data),
                    end,
                    mode,
                });
            }
            for j in whole {
                out[j].remove(path);
            }
        }
        for mine in &mut out {
            for tails in mine.values_mut() {
                tails.sort_by_key(|t| t.end);
            }
        }
        Ok((out, sizes))
    }

    /// The size of blob `id` (0 when it cannot be read).
    fn blob_size(&self, id: Oid) -> u64 {
        self.repo
            .odb()
            .and_then(|odb| odb.read_header(id))
            .map_or(0, |(n, _)| n as u64)
    }

    /// `data`, a part of the work tree's `path`, as the repository stores it: through git's
    /// filters when they could change it (a carriage return for the end-of-line conversions,
    /// `$Id` for ident), else as it is.
    fn clean(&self, path: &Path, data: &[u8]) -> Result<Vec<u8>, Error> {
        let may_change = data.contains(&b'\r') || data.windows(3).any(|w| w == b"$Id");
        if !may_change {
            return Ok(data.to_vec());
        }
        let fail = |e: git2::Error| git_error(format_args!("hashing {}", shown(path)), &e);
        let mut w = self.repo.blob_writer(Some(path)).map_err(fail)?;
        w.write_all(data)
            .map_err(|e| Error::io(format_args!("hashing {}", shown(path)), &e))?;
        let id = w.commit().map_err(fail)?;
        Ok(self.repo.find_blob(id).map_err(fail)?.content().to_vec())
    }

    /// What job `j` makes of its paths on `base`: a path it takes whole as hashed, one it
    /// appended to as [`Git::after_tails`] says.
    fn job_changes(
        &self,
        base: &Base,
        j: usize,
        r: &Resolved,
        changes: &Changes,
    ) -> Result<BTreeMap<PathBuf, Option<(Oid, u32)>>, Error> {
        let mut mine = BTreeMap::new();
        for t in &r.targets {
            let p = t.path();
            let v = match changes.tails.get(j).and_then(|m| m.get(p)) {
                Some(tails) => {
                    self.after_tails(j, p, self.entry(base, p).map(|e| (e.id, e.mode)), tails)?
                }
                None => match changes.whole.get(p) {
                    Some(v) => *v,
                    None => continue,
                },
            };
            mine.insert(p.to_path_buf(), v);
        }
        Ok(mine)
    }

    /// The jobs applied one after the other on `base`: each path as the last job naming it
    /// leaves it, and, for each job, whether one of its appends changed its path.
    fn plan(
        &self,
        base: &Base,
        resolved: &[Result<Resolved, Error>],
        changes: &Changes,
    ) -> Result<Plan, Error> {
        let mut plan = Plan {
            last: BTreeMap::new(),
            advanced: vec![false; resolved.len()],
        };
        for (j, r) in resolved.iter().enumerate() {
            let Ok(r) = r else { continue };
            for t in &r.targets {
                let p = t.path();
                let v = match changes.tails.get(j).and_then(|m| m.get(p)) {
                    Some(tails) => {
                        let now = match plan.last.get(p) {
                            Some(v) => *v,
                            None => self.entry(base, p).map(|e| (e.id, e.mode)),
                        };
                        let v = self.after_tails(j, p, now, tails)?;
                        plan.advanced[j] |= v != now;
                        v
                    }
                    None => match changes.whole.get(p) {
                        Some(v) => *v,
                        None => continue,
                    },
                };
                plan.last.insert(p.to_path_buf(), v);
            }
        }
        Ok(plan)
    }

    /// What the index entry of each path the jobs name becomes, the jobs applied one after the
    /// other on the index as it was (`olds`): a path taken whole, as hashed; a path appended
    /// to, the index's blob with the entries appended ([`Git::after_tails`]), so that what the
    /// user staged stays staged and what they did not stays unstaged. Left out (the entry
    /// left as it is): a path appended to that the index does not hold while HEAD does (its
    /// deletion is staged, or it is in conflict).
    fn index_plan(
        &self,
        base: &Base,
        resolved: &[Result<Resolved, Error>],
        changes: &Changes,
        olds: &BTreeMap<PathBuf, Option<IndexEntry>>,
    ) -> Result<BTreeMap<PathBuf, Option<(Oid, u32)>>, Error> {
        // `None`: left as it is.
        let mut cur: BTreeMap<PathBuf, Option<Option<(Oid, u32)>>> = BTreeMap::new();
        for (j, r) in resolved.iter().enumerate() {
            let Ok(r) = r else { continue };
            for t in &r.targets {
                let p = t.path();
                match changes.tails.get(j).and_then(|m| m.get(p)) {
                    Some(tails) => {
                        let state = cur.entry(p.to_path_buf()).or_insert_with(|| {
                            let old = olds.get(p).and_then(|o| o.as_ref()).map(|e| (e.id, e.mode));
                            (old.is_some() || self.entry(base, p).is_none()).then_some(old)
                        });
                        if let Some(now) = state {
                            *now = self.after_tails(j, p, *now, tails)?;
                        }
                    }
                    None => {
                        if let Some(v) = changes.whole.get(p) {
                            cur.insert(p.to_path_buf(), Some(*v));
                        }
                    }
                }
            }
        }
        Ok(cur
            .into_iter()
            .filter_map(|(p, v)| v.map(|v| (p, v)))
            .collect())
    }

    /// What a path that holds `now` holds once job `j` appends `tails` to it: each entry
    /// after `now`'s content (and a newline, when that does not end with one), unless that
    /// already holds the entry's marker line (the record was committed, as when a drain is
    /// replayed); for a path with nothing yet (absent or empty), the file as the record left
    /// it (its first `end` bytes, the header included).
    fn after_tails(
        &self,
        j: usize,
        path: &Path,
        now: Option<(Oid, u32)>,
        tails: &[Tail],
    ) -> Result<Option<(Oid, u32)>, Error> {
        let key = (now.map(|n| n.0), j, path.to_path_buf());
        if let Some(v) = self.memo.borrow().get(&key) {
            return Ok(*v);
        }
        let fail = |e: git2::Error| git_error(format_args!("reading {} in HEAD", shown(path)), &e);
        let mut content = match now {
            Some((id, _)) => self.repo.find_blob(id).map_err(fail)?.content().to_vec(),
            None => Vec::new(),
        };
        let mut mode = now.map(|n| n.1);
        let mut changed = false;
        for t in tails {
            if content.is_empty() {
                content = self.clean(path, &t.data[..t.end])?;
                mode.get_or_insert(t.mode);
            } else if marker::has_marker(&content, &t.marker) {
                continue;
            } else {
                if !content.ends_with(b"\n") {
                    content.push(b'\n');
                }
                content.extend_from_slice(&t.entry);
            }
            changed = true;
        }
        let v = match (changed, mode) {
            (true, Some(mode)) => {
                let id = self
                    .repo
                    .blob(&content)
                    .map_err(|e| git_error(format_args!("hashing {}", shown(path)), &e))?;
                Some((id, mode))
            }
            _ => now,
        };
        self.memo.borrow_mut().insert(key, v);
        Ok(v)
    }

    /// HEAD's tree with the changes applied; `None` when that is HEAD's tree itself.
    fn build_tree(
        &self,
        base: &Base,
        changes: &BTreeMap<PathBuf, Option<(Oid, u32)>>,
    ) -> Result<Option<Oid>, Error> {
        let id = self
            .trees
            .borrow_mut()
            .update(self.repo, base.root, changes)
            .map_err(|e| git_error("building the new tree", &e))?;
        Ok(id.filter(|id| Some(*id) != base.root))
    }

    /// Moves the branch from `head.oid` to `new`, under its ref lock. `Some(head)` when it no
    /// longer pointed at `head.oid` (nothing was changed).
    fn move_ref(
        &self,
        lock: &indexlock::IndexLock,
        head: &Head,
        new: Oid,
        who: &Signature<'_>,
        reflog: &str,
        deadline: Instant,
    ) -> Result<Option<Head>, Error> {
        // Where libgit2 locks the ref: per-worktree refs (HEAD) in the worktree's git dir,
        // the others in the common one.
        let base = if head.refname.starts_with("refs/") {
            self.repo.commondir()
        } else {
            self.repo.path()
        };
        let ref_lock = base.join(format!("{}.lock", head.refname));
        let wait = indexlock::Wait {
            deadline,
            timeout: self.opts.timeout,
            stale: self.opts.stale,
        };
        let mut delay = Duration::from_millis(1);
        loop {
            let mut tx = self
                .repo
                .transaction()
                .map_err(|e| git_error("starting a ref update", &e))?;
            let declared = Declared::new(lock, &ref_lock, new);
            match tx.lock_ref(&head.refname) {
                Ok(()) => {}
                Err(e) if e.code() == ErrorCode::Locked => {
                    drop(tx);
                    drop(declared);
                    if indexlock::clear_old_lock(self.repo.path(), &ref_lock, wait)? {
                        continue;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::temporary(indexlock::busy_reason(
                            &head.refname,
                            &ref_lock,
                            wait,
                        )));
                    }
                    std::thread::sleep(delay.min(deadline - now));
                    delay = (delay * 2).min(Duration::from_millis(50));
                    continue;
                }
                Err(e) => return Err(git_error(format_args!("locking {}", head.refname), &e)),
            }
            if self.ref_target(&head.refname)? != head.oid {
                drop(tx);
                return Ok(Some(self.head()?));
            }
            tx.set_target(&head.refname, new, Some(who), reflog)
                .and_then(|()| tx.commit())
                .map_err(|e| git_error(format_args!("updating {}", head.refname), &e))?;
            drop(declared);
            return Ok(None);
        }
    }

    /// The files a job's paths stand for.
    fn resolve(&self, job: &Job, base: &Base, idx: &Index) -> Result<Resolved, Error> {
        let mut out = Resolved::default();
        for p in &job.paths {
            let full = self.workdir.join(p);
            let tracked = self.entry(base, p).is_some() || idx.get_path(p, 0).is_some();
            match std::fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {
                    if full.join(".git").exists() {
                        return Err(Error::data(format!(
                            "{} is a nested git repository; elf-commit does not commit submodules",
                            shown(p)
                        )));
                    }
                    if !self.tracked_below(p, base, idx) && self.ignored(p)? {
                        self.skip(p, &mut out)?;
                    } else {
                        self.expand_dir(p, base, idx, &mut out)?;
                    }
                }
                // A FIFO, socket or device: git cannot commit one, and reading a FIFO would
                // block forever while holding the locks, with the signals that could stop us
                // blocked (see `elf_core::signals::Blocked`).
                Ok(m) if !(m.is_file() || m.is_symlink()) => {
                    return Err(Error::data(format!(
                        "{} is not a regular file, a symbolic link or a folder; git cannot commit it",
                        shown(p)
                    )));
                }
                Ok(_) => {
                    if !tracked && self.ignored(p)? {
                        self.skip(p, &mut out)?;
                    } else {
                        out.targets.push(Target::Add(p.clone()));
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    if self.tracked_below(p, base, idx) {
                        self.expand_dir(p, base, idx, &mut out)?;
                    } else if tracked {
                        out.targets.push(Target::Remove(p.clone()));
                    } else {
                        return Err(Error::no_input(format!(
                            "{} does not exist and is not tracked",
                            shown(p)
                        )));
                    }
                }
                Err(e) => return Err(Error::io(format_args!("reading {}", shown(p)), &e)),
            }
        }
        for t in &out.targets {
            if let Target::Add(p) = t {
                self.refuse_filtered(p)?;
            }
        }
        Ok(out)
    }

    /// Refuses a path git would put through a program of the user's on its way in: a
    /// `.gitattributes` `filter=DRIVER` whose `filter.DRIVER.clean` or `.process` is
    /// configured (git-lfs among them), or that is `required`; or a `working-tree-encoding`.
    /// libgit2 runs neither, and elf-commit does not run the user's programs, so committing
    /// such a path would commit what git would not (69, before anything is committed).
    fn refuse_filtered(&self, p: &Path) -> Result<(), Error> {
        let attr = |name: &str| {
            self.repo
                .get_attr_bytes(p, name, git2::AttrCheckFlags::default())
                .map_err(|e| git_error(format_args!("reading the attributes of {}", shown(p)), &e))
                .map(|v| match git2::AttrValue::from_bytes(v) {
                    git2::AttrValue::String(s) => Some(s.as_bytes().to_vec()),
                    git2::AttrValue::Bytes(b) => Some(b.to_vec()),
                    _ => None,
                })
        };
        if let Some(driver) = attr("filter")? {
            let driver = String::from_utf8_lossy(&driver).into_owned();
            let cfg = self
                .repo
                .config()
                .map_err(|e| git_error("reading git's configuration", &e))?;
            let key = |k: &str| format!("filter.{driver}.{k}");
            let set = |k: &str| cfg.get_string(&key(k)).is_ok_and(|v| !v.trim().is_empty());
            let required = cfg.get_bool(&key("required")).unwrap_or(false);
            if set("clean") || set("process") || required {
                return Err(unsupported(format_args!(
                    "{} goes through the filter driver {} (.gitattributes filter={}, {}), \
                     which elf-commit does not run; commit it with git",
                    shown(p),
                    escape(&driver),
                    escape(&driver),
                    if set("process") {
                        key("process")
                    } else {
                        key("clean")
                    }
                )));
            }
        }
        if let Some(enc) = attr("working-tree-encoding")? {
            return Err(unsupported(format_args!(
                "{} has working-tree-encoding={} (.gitattributes), which elf-commit does not \
                 convert; commit it with git",
                shown(p),
                escape(&String::from_utf8_lossy(&enc))
            )));
        }
        Ok(())
    }

    fn skip(&self, p: &Path, out: &mut Resolved) -> Result<(), Error> {
        if self.opts.ignored_error {
            return Err(Error::data(format!(
                "{} is ignored by git (.gitignore, .git/info/exclude or core.excludesFile)",
                shown(p)
            )));
        }
        out.skipped.push(p.to_path_buf());
        Ok(())
    }

    fn ignored(&self, p: &Path) -> Result<bool, Error> {
        self.repo
            .is_path_ignored(p)
            .map_err(|e| git_error(format_args!("checking whether {} is ignored", shown(p)), &e))
    }

    /// True when HEAD's tree or the index holds something below directory `p`.
    fn tracked_below(&self, p: &Path, base: &Base, idx: &Index) -> bool {
        if self.entry(base, p).is_some_and(|e| e.is_tree()) {
            return true;
        }
        let prefix = dir_prefix(p);
        idx.iter().any(|e| e.path.starts_with(&prefix))
    }

    /// Every file below directory `p`: those in the work tree (untracked ignored ones left
    /// out, as `git add DIR` does), and those tracked that are gone (removed).
    fn expand_dir(
        &self,
        p: &Path,
        base: &Base,
        idx: &Index,
        out: &mut Resolved,
    ) -> Result<(), Error> {
        let mut files = Vec::new();
        walk_dir(self.workdir, p, &mut files)?;
        let present: BTreeSet<PathBuf> = files.iter().cloned().collect();
        for f in files {
            let tracked = self.entry(base, &f).is_some() || idx.get_path(&f, 0).is_some();
            if tracked || !self.ignored(&f)? {
                out.targets.push(Target::Add(f));
            }
        }
        let mut gone = BTreeSet::new();
        if let Some(entry) = self.entry(base, p).filter(Entry::is_tree) {
            let mut tracked = Vec::new();
            self.trees
                .borrow_mut()
                .files_below(self.repo, entry.id, p, &mut tracked)
                .map_err(|e| git_error(format_args!("reading {} in HEAD", shown(p)), &e))?;
            gone.extend(tracked.into_iter().filter(|f| !present.contains(f)));
        }
        let prefix = dir_prefix(p);
        for e in idx.iter().filter(|e| e.path.starts_with(&prefix)) {
            let f = PathBuf::from(OsStr::from_bytes(&e.path));
            if !present.contains(&f) {
                gone.insert(f);
            }
        }
        out.targets.extend(gone.into_iter().map(Target::Remove));
        Ok(())
    }
}

/// Which file a path names, and which version of it: a file replaced by rename, or written
/// again, compares different.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(p: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(p).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The ref lock declared in `index.lock` while it may exist; withdrawn on drop, whatever
/// happens in between.
struct Declared<'a>(&'a indexlock::IndexLock);

impl<'a> Declared<'a> {
    fn new(lock: &'a indexlock::IndexLock, ref_lock: &Path, new: Oid) -> Declared<'a> {
        lock.declare_ref_lock(ref_lock, &new.to_string());
        Declared(lock)
    }
}

impl Drop for Declared<'_> {
    fn drop(&mut self) {
        self.0.clear_declaration();
    }
}

/// Writes the index copy and renames it over the index (while `index.lock` is held).
fn install_index(idx: &mut Index, scratch: &Path, index_path: &Path) -> Result<(), Error> {
    idx.write()
        .map_err(|e| git_error("writing the index", &e))?;
    std::fs::rename(scratch, index_path)
        .map_err(|e| Error::io(format_args!("replacing {}", shown(index_path)), &e))
}

/// An entry a job's record appended to a file (see [`Git::tails`]).
#[derive(Debug, Clone)]
struct Tail {
    /// The marker line and the content after it, as the repository stores them.
    entry: Vec<u8>,
    /// The marker line, by which a blob already holding the entry is known.
    marker: Vec<u8>,
    /// The start of the file as read, shared by the file's tails.
    data: Rc<Vec<u8>>,
    /// Where the entry ends in it: `data[..end]` is the file as the record left it.
    end: usize,
    /// The file's mode, as git gives it.
    mode: u32,
}

/// For each job, the files it appended to, with its entries in them, in order.
type Tails = Vec<BTreeMap<PathBuf, Vec<Tail>>>;

/// The new content of the jobs' paths: the entries of the paths taken whole (`None`: removed),
/// and for each job, the files it appended to.
struct Changes {
    whole: BTreeMap<PathBuf, Option<(Oid, u32)>>,
    tails: Tails,
}

/// The jobs applied in order (see [`Git::plan`]).
struct Plan {
    /// Each path as the last job naming it leaves it.
    last: BTreeMap<PathBuf, Option<(Oid, u32)>>,
    /// For each job: one of its appends changed its path.
    advanced: Vec<bool>,
}

/// Reads the start of the file at `full` for the appends claiming it: as far as the
/// furthest `end` short of the file's size (nothing when there is none). The bytes, the mode
/// git gives the file, and its size; `None` when it is not a regular file or cannot be read
/// (it is then taken whole, as without appends).
fn read_prefix(full: &Path, claims: &[(usize, &Append)]) -> Option<(Vec<u8>, u32, u64)> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(full)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let size = meta.len();
    let need = claims
        .iter()
        .map(|(_, a)| a.end)
        .filter(|&end| end <= size)
        .max()
        .unwrap_or(0);
    let mut data = vec![0; usize::try_from(need).ok()?];
    f.read_exact(&mut data).ok()?;
    // As git records a regular file (libgit2, trusting the executable bit as it does for
    // the whole files this index copy hashes).
    let mode = if meta.permissions().mode() & 0o100 != 0 {
        0o100_755
    } else {
        0o100_644
    };
    Some((data, mode, size))
}

/// Hashes into the index, through git's filters and with stat data, the paths the jobs take
/// whole (every path they name but those a job takes as a prefix), and removes the ones
/// they remove. Returns their new entries (`None`: removed); `olds` gets the entry each path
/// had before, the first time it is seen.
fn hash_whole(
    idx: &mut Index,
    workdir: &Path,
    resolved: &[Result<Resolved, Error>],
    tails: &[BTreeMap<PathBuf, Vec<Tail>>],
    olds: &mut BTreeMap<PathBuf, Option<IndexEntry>>,
) -> Result<BTreeMap<PathBuf, Option<(Oid, u32)>>, Error> {
    let mut whole = BTreeMap::new();
    for (r, mine) in resolved.iter().zip(tails) {
        let Ok(r) = r else { continue };
        for t in &r.targets {
            let p = t.path();
            if !olds.contains_key(p) {
                olds.insert(p.to_path_buf(), idx.get_path(p, 0));
            }
            if whole.contains_key(p) || mine.contains_key(p) {
                continue;
            }
            match t {
                Target::Add(p) => {
                    add_path(idx, workdir, p)?;
                    let new = idx.get_path(p, 0).ok_or_else(|| {
                        Error::internal(format!("{} vanished from the index", shown(p)))
                    })?;
                    whole.insert(p.clone(), Some((new.id, new.mode)));
                }
                Target::Remove(p) => {
                    if idx.get_path(p, 0).is_some() {
                        idx.remove_path(p)
                            .map_err(|e| git_error(format_args!("removing {}", shown(p)), &e))?;
                    }
                    whole.insert(p.clone(), None);
                }
            }
        }
    }
    Ok(whole)
}

/// Hashes `p` into the index. libgit2 reads a file as long as it measured it first, and fails
/// when another version was renamed in between (as elf-write does, appending while the
/// commit of its previous records is made): then it is hashed again, as it is now.
fn add_path(idx: &mut Index, workdir: &Path, p: &Path) -> Result<(), Error> {
    let full = workdir.join(p);
    let mut before = FileId::of(&full);
    let mut tries = 0;
    loop {
        match idx.add_path(p) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let now = FileId::of(&full);
                if tries == 5 || now.is_none() || now == before {
                    return Err(git_error(format_args!("adding {}", shown(p)), &e));
                }
                before = now;
                tries += 1;
            }
        }
    }
}

/// Gives every path the jobs named its index entry as [`Git::index_plan`] planned it (`want`;
/// a path left out keeps the entry it had): the entry of the whole file as hashed, with its
/// stat data, when that is it; the entry it had when that was it already; else the blob with
/// no stat data (all zero), so that git compares it with the file by content and shows what
/// the index does not hold (the user's changes not staged, later appends not committed yet)
/// as a change not staged. True when the index changed.
fn settle_index(
    idx: &mut Index,
    olds: &BTreeMap<PathBuf, Option<IndexEntry>>,
    whole: &BTreeMap<PathBuf, Option<(Oid, u32)>>,
    want: &BTreeMap<PathBuf, Option<(Oid, u32)>>,
) -> Result<bool, Error> {
    let mut dirty = false;
    for (p, old) in olds {
        let add = |idx: &mut Index, e: &IndexEntry| {
            idx.add(e)
                .map_err(|e| git_error(format_args!("adding {}", shown(p)), &e))
        };
        let remove = |idx: &mut Index| -> Result<(), Error> {
            if idx.get_path(p, 0).is_some() {
                idx.remove_path(p)
                    .map_err(|e| git_error(format_args!("removing {}", shown(p)), &e))?;
            }
            Ok(())
        };
        match (want.get(p), old) {
            (Some(Some((id, mode))), _) if whole.get(p) == Some(&Some((*id, *mode))) => {}
            (Some(Some((id, mode))), Some(o)) if o.id == *id && o.mode == *mode => add(idx, o)?,
            (Some(Some((id, mode))), _) => {
                let unstat = IndexEntry {
                    ctime: IndexTime::new(0, 0),
                    mtime: IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode: *mode,
                    uid: 0,
                    gid: 0,
                    file_size: 0,
                    id: *id,
                    flags: 0,
                    flags_extended: 0,
                    path: p.as_os_str().as_bytes().to_vec(),
                };
                add(idx, &unstat)?;
            }
            (Some(None), _) | (None, None) => remove(idx)?,
            (None, Some(o)) => add(idx, o)?,
        }
        dirty |= match (old, idx.get_path(p, 0)) {
            (None, None) => false,
            (Some(o), Some(n)) => !same_entry(o, &n),
            _ => true,
        };
    }
    Ok(dirty)
}

/// HEAD's tree, absent on an unborn branch.
struct Base {
    root: Option<Oid>,
}

struct Head {
    refname: String,
    oid: Option<Oid>,
}

#[derive(Debug)]
enum Target {
    Add(PathBuf),
    Remove(PathBuf),
}

impl Target {
    fn path(&self) -> &Path {
        match self {
            Target::Add(p) | Target::Remove(p) => p,
        }
    }
}

#[derive(Debug, Default)]
struct Resolved {
    targets: Vec<Target>,
    skipped: Vec<PathBuf>,
}

fn same_entry(a: &IndexEntry, b: &IndexEntry) -> bool {
    a.id == b.id
        && a.mode == b.mode
        && a.file_size == b.file_size
        && a.mtime == b.mtime
        && a.ctime == b.ctime
        && a.ino == b.ino
        && a.dev == b.dev
        && a.uid == b.uid
        && a.gid == b.gid
        && a.flags == b.flags
        && a.flags_extended == b.flags_extended
}

/// `dir/` as bytes, for matching index paths.
fn dir_prefix(p: &Path) -> Vec<u8> {
    let mut v = p.as_os_str().as_bytes().to_vec();
    v.push(b'/');
    v
}

/// Files (and symlinks) below `rel`, skipping `.git` and nested repositories.
fn walk_dir(workdir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let dir = workdir.join(rel);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(());
        }
        Err(e) => return Err(Error::io(format_args!("reading {}", shown(rel)), &e)),
    };
    let mut names: Vec<_> = entries.flatten().collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name();
        if name.eq_ignore_ascii_case(".git") {
            continue;
        }
        let child = rel.join(&name);
        let ft = e
            .file_type()
            .map_err(|err| Error::io(format_args!("reading {}", shown(&child)), &err))?;
        if ft.is_dir() {
            if e.path().join(".git").exists() {
                elf_core::warn(format_args!(
                    "skipping nested git repository {}",
                    shown(&child)
                ));
                continue;
            }
            walk_dir(workdir, &child, out)?;
        } else if ft.is_file() || ft.is_symlink() {
            out.push(child);
        }
        // FIFOs, sockets and devices are left out, as `git add DIR` leaves them.
    }
    Ok(())
}

/// Author and committer identities, loaded once.
struct Ident {
    author: Person,
    committer: Person,
}

struct Person {
    name: String,
    email: String,
    date: Option<(i64, i32)>,
}

impl Person {
    /// Git's order: `GIT_AUTHOR_NAME`, then `author.name`, then `user.name` (and likewise for
    /// the email, with `EMAIL` last; for the committer, `GIT_COMMITTER_*` and `committer.*`).
    fn load(cfg: &Config, role: &str) -> Result<Person, Error> {
        let upper = role.to_ascii_uppercase();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let conf = |k: &str| cfg.get_string(k).ok().filter(|v| !v.trim().is_empty());
        let name = env(&format!("GIT_{upper}_NAME"))
            .or_else(|| conf(&format!("{role}.name")))
            .or_else(|| conf("user.name"));
        let email = env(&format!("GIT_{upper}_EMAIL"))
            .or_else(|| conf(&format!("{role}.email")))
            .or_else(|| conf("user.email"))
            .or_else(|| env("EMAIL"));
        let (Some(name), Some(email)) = (name, email) else {
            return Err(Error::usage(format!(
                "no {role} identity: set user.name and user.email in git's configuration, \
                 or GIT_{upper}_NAME and GIT_{upper}_EMAIL"
            )));
        };
        let var = format!("GIT_{upper}_DATE");
        let date = match env(&var) {
            None => None,
            Some(v) => Some(parse_date(&v).ok_or_else(|| {
                Error::usage(format!(
                    "{var}={}: expected '@SECONDS +HHMM' or an ISO 8601 date",
                    escape(&v)
                ))
            })?),
        };
        Ok(Person { name, email, date })
    }

    fn signature(&self) -> Result<Signature<'static>, Error> {
        let sig = match self.date {
            Some((secs, offset)) => {
                Signature::new(&self.name, &self.email, &Time::new(secs, offset))
            }
            None => Signature::now(&self.name, &self.email),
        };
        sig.map_err(|e| {
            Error::usage(format!(
                "bad identity {} <{}>: {}",
                escape(&self.name),
                escape(&self.email),
                e.message()
            ))
        })
    }
}

/// A libgit2 error with what was being done, and the exit status it stands for.
pub fn git_error(context: impl Display, e: &git2::Error) -> Error {
    let msg = format!("{context}: {}", escape(e.message()));
    match e.code() {
        ErrorCode::Locked => Error::temporary(msg),
        ErrorCode::NotFound => Error::no_input(msg),
        ErrorCode::Owner => Error::permission(msg),
        ErrorCode::BareRepo => Error::usage(msg),
        _ if e.class() == ErrorClass::Invalid => Error::data(msg),
        _ => Error::io_failure(msg),
    }
}
