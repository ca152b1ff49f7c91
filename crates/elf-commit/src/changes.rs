//! What a group of jobs changes, worked out through one repository handle ([`Git`]): HEAD and
//! its tree, each job's paths resolved to files to add or remove, the entries the jobs' own
//! records appended (their tails), the tree each path ends in and the index entries to match,
//! the trees built and the branch moved by compare-and-swap. [`crate::git::Repo`] runs these
//! steps under its locks.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use git2::{Buf, ErrorCode, Index, IndexEntry, Mempack, Oid, Repository, Signature};

use elf_core::text::escape;
use elf_core::{Error, marker};

use crate::indexlock;
pub use crate::job::{Append, Job};
use crate::repository::{git_error, unsupported};
use crate::tree::{Entry, Trees};
use crate::worktree::{add_path, dir_prefix, walk_dir};
use elf_core::paths::show as shown;

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

/// The repository handle one commit works through: the long-lived one, or, for a commit of
/// many files, one whose new objects go to memory first and then into one pack.
pub struct Git<'r> {
    pub repo: &'r Repository,
    pub workdir: &'r Path,
    pub opts: Options,
    pub pack: Option<&'r Mempack<'r>>,
    pub trees: &'r RefCell<Trees>,
    /// [`Git::after_tails`] by what the path held, the job and the path.
    pub memo: RefCell<Memo>,
}

pub type Memo = BTreeMap<(Option<Oid>, usize, PathBuf), Option<(Oid, u32)>>;

impl Git<'_> {
    /// Writes the objects made so far in memory as one pack (nothing for the long-lived handle,
    /// which writes loose objects as git does).
    pub fn flush(&self) -> Result<(), Error> {
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
    pub fn head(&self) -> Result<Head, Error> {
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

    pub fn ref_target(&self, name: &str) -> Result<Option<Oid>, Error> {
        match self.repo.refname_to_id(name) {
            Ok(oid) => Ok(Some(oid)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(git_error(format_args!("reading {name}"), &e)),
        }
    }

    /// The tree of a commit (none on an unborn branch).
    pub fn tree(&self, commit: Option<Oid>) -> Result<Base, Error> {
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
    pub fn entry(&self, base: &Base, p: &Path) -> Option<Entry> {
        let root = base.root?;
        self.trees
            .borrow_mut()
            .get(self.repo, root, p)
            .ok()
            .flatten()
    }

    /// Whether `p` in the new tree differs from `base`.
    pub fn differs(
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
    pub fn tails(
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
    pub fn blob_size(&self, id: Oid) -> u64 {
        self.repo
            .odb()
            .and_then(|odb| odb.read_header(id))
            .map_or(0, |(n, _)| n as u64)
    }

    /// `data`, a part of the work tree's `path`, as the repository stores it: through git's
    /// filters when they could change it (a carriage return for the end-of-line conversions,
    /// `$Id` for ident), else as it is.
    pub fn clean(&self, path: &Path, data: &[u8]) -> Result<Vec<u8>, Error> {
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
    pub fn job_changes(
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
    pub fn plan(
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
    pub fn index_plan(
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
    pub fn after_tails(
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
    pub fn build_tree(
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
    pub fn move_ref(
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
    pub fn resolve(&self, job: &Job, base: &Base, idx: &Index) -> Result<Resolved, Error> {
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
    pub fn refuse_filtered(&self, p: &Path) -> Result<(), Error> {
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

    pub fn skip(&self, p: &Path, out: &mut Resolved) -> Result<(), Error> {
        if self.opts.ignored_error {
            return Err(Error::data(format!(
                "{} is ignored by git (.gitignore, .git/info/exclude or core.excludesFile)",
                shown(p)
            )));
        }
        out.skipped.push(p.to_path_buf());
        Ok(())
    }

    pub fn ignored(&self, p: &Path) -> Result<bool, Error> {
        self.repo
            .is_path_ignored(p)
            .map_err(|e| git_error(format_args!("checking whether {} is ignored", shown(p)), &e))
    }

    /// True when HEAD's tree or the index holds something below directory `p`.
    pub fn tracked_below(&self, p: &Path, base: &Base, idx: &Index) -> bool {
        if self.entry(base, p).is_some_and(|e| e.is_tree()) {
            return true;
        }
        let prefix = dir_prefix(p);
        idx.iter().any(|e| e.path.starts_with(&prefix))
    }

    /// Every file below directory `p`: those in the work tree (untracked ignored ones left
    /// out, as `git add DIR` does), and those tracked that are gone (removed).
    pub fn expand_dir(
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

/// The ref lock declared in `index.lock` while it may exist; withdrawn on drop, whatever
/// happens in between.
pub struct Declared<'a>(&'a indexlock::IndexLock);

impl<'a> Declared<'a> {
    pub fn new(lock: &'a indexlock::IndexLock, ref_lock: &Path, new: Oid) -> Declared<'a> {
        lock.declare_ref_lock(ref_lock, &new.to_string());
        Declared(lock)
    }
}

impl Drop for Declared<'_> {
    fn drop(&mut self) {
        self.0.clear_declaration();
    }
}

/// An entry a job's record appended to a file (see [`Git::tails`]).
#[derive(Debug, Clone)]
pub struct Tail {
    /// The marker line and the content after it, as the repository stores them.
    pub entry: Vec<u8>,
    /// The marker line, by which a blob already holding the entry is known.
    pub marker: Vec<u8>,
    /// The start of the file as read, shared by the file's tails.
    pub data: Rc<Vec<u8>>,
    /// Where the entry ends in it: `data[..end]` is the file as the record left it.
    pub end: usize,
    /// The file's mode, as git gives it.
    pub mode: u32,
}

/// For each job, the files it appended to, with its entries in them, in order.
pub type Tails = Vec<BTreeMap<PathBuf, Vec<Tail>>>;

/// The new content of the jobs' paths: the entries of the paths taken whole (`None`: removed),
/// and for each job, the files it appended to.
pub struct Changes {
    pub whole: BTreeMap<PathBuf, Option<(Oid, u32)>>,
    pub tails: Tails,
}

/// The jobs applied in order (see [`Git::plan`]).
pub struct Plan {
    /// Each path as the last job naming it leaves it.
    pub last: BTreeMap<PathBuf, Option<(Oid, u32)>>,
    /// For each job: one of its appends changed its path.
    pub advanced: Vec<bool>,
}

/// Reads the start of the file at `full` for the appends claiming it: as far as the
/// furthest `end` short of the file's size (nothing when there is none). The bytes, the mode
/// git gives the file, and its size; `None` when it is not a regular file or cannot be read
/// (it is then taken whole, as without appends).
pub fn read_prefix(full: &Path, claims: &[(usize, &Append)]) -> Option<(Vec<u8>, u32, u64)> {
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
pub fn hash_whole(
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

/// HEAD's tree, absent on an unborn branch.
pub struct Base {
    pub root: Option<Oid>,
}

pub struct Head {
    pub refname: String,
    pub oid: Option<Oid>,
}

#[derive(Debug)]
pub enum Target {
    Add(PathBuf),
    Remove(PathBuf),
}

impl Target {
    pub fn path(&self) -> &Path {
        match self {
            Target::Add(p) | Target::Remove(p) => p,
        }
    }
}

#[derive(Debug, Default)]
pub struct Resolved {
    pub targets: Vec<Target>,
    pub skipped: Vec<PathBuf>,
}
