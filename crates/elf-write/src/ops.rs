//! The three writes, each under the target's lock, each made visible by one rename or link.
//!
//! - replace: the content goes into a temporary file in the same folder, which is fsynced,
//!   renamed over the target, and the folder fsynced. Content already there: nothing is done.
//! - create: the same temporary file gets the name only if the name is free (`renameat2` with
//!   `RENAME_NOREPLACE`, or `link(2)` where that is missing), so the name appears complete or
//!   not at all. With `unique`, the names `name.ext`, `name-2.ext`, ... are tried in order; one
//!   that already holds this very content is this write, replayed.
//! - append: the old content, the header (new or empty file), the marker line and the new
//!   content go into a temporary file renamed over the target: a crash leaves the old file or
//!   the new one, never half an entry. A marker already in the file means the append was done.
//!   Its `end` is the size of the new file (the entry is last in it), or, for an append found
//!   already done, the offset just past the content that follows its marker, when that content
//!   is this append's (see `elf_core::marker`).
//!
//! In the record form, a replace or an append may instead be left complete in its temporary
//! file, under its lock, for the batch: [`Files::flush`] then puts the batch on disk with one
//! `syncfs` and renames each file in, in order (see `Applied` for when a write cannot join).
//!
//! Temporary files are named `.elf-write.PID.RANDOM.tmp` and are `flock`ed by their writer.
//! The first write into a folder removes the ones whose writer is gone (no such process, and
//! the lock is free).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use elf_core::lockfile;
use elf_core::marker::{entry_end, has_marker};
use elf_core::text::escape;
use elf_core::{Error, IoContext, Result};

use crate::locks::{Held, Locks};
use crate::spec::{Mode, Spec};
use crate::sys;
use crate::target::{Folder, RelPath, Root};

/// What a write did: the `write.*` results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The final path, relative to the root (another name with `unique`).
    pub path: RelPath,
    /// The size of the content.
    pub bytes: u64,
    /// True when this run wrote it; false when it was already there.
    pub created: bool,
    /// Appends: true when this run wrote the header.
    pub header_written: Option<bool>,
    /// Appends: the size of the file's prefix that ends with this entry; `None` for an append
    /// found already done whose marker is not followed by this content.
    pub end: Option<u64>,
}

/// Everything the writes share: the root, the locks, the options.
#[derive(Debug)]
pub struct Files {
    root: Root,
    locks: Locks,
    sync: bool,
    ids: Ids,
    cleaned: HashSet<(u64, u64)>,
    /// Folders whose new entries are not yet on disk, by (device, inode).
    unsynced: HashMap<(u64, u64), Folder>,
    /// Writes complete in their temporary files, waiting for [`Files::flush`].
    pending: Vec<Pending>,
    /// The most writes left pending: lowered when descriptors ran short with this many.
    max_pending: usize,
}

/// What [`Files::apply_in_batch`] did.
#[derive(Debug)]
pub enum Applied {
    /// Written, or already there.
    Done(Outcome),
    /// Complete in a temporary file, made durable and given its name by the next
    /// [`Files::flush`]; its outcome is what it will be then.
    Deferred(Outcome),
    /// Nothing done: the pending writes must be flushed first (the write is not one that can
    /// join them, touches a file one of them will replace, or waits for a lock held by another
    /// writer, which must not wait while this one holds locks). Flush, then apply again.
    FlushFirst,
}

/// A replace or append complete in its temporary file, under its lock, waiting for its batch
/// to be made durable at once (one `syncfs` instead of one `fsync` per file) and renamed in.
#[derive(Debug)]
struct Pending {
    folder: Folder,
    id: (u64, u64),
    name: OsString,
    temp: CString,
    target: CString,
    file: File,
    shown: String,
    /// Released once the file has its name (or the write is abandoned).
    held: Held,
}

impl Pending {
    /// Gives up the write: the temporary file goes, the target stays as it was.
    fn abandon(self) {
        let _ = sys::unlinkat(self.folder.dir(), &self.temp);
        drop(self.held);
    }
}

/// Facts about the process, looked up once.
#[derive(Debug, Clone, Copy)]
struct Ids {
    umask: u32,
    pid: u32,
    uid: u32,
    gid: u32,
}

/// What is at a name.
enum Existing {
    Missing,
    File(libc::stat),
    Other(&'static str),
}

impl Files {
    /// `sync` false is `--no-sync`.
    pub fn new(root: Root, locks: Locks, sync: bool) -> Files {
        let ids = Ids {
            umask: sys::umask(),
            pid: std::process::id(),
            uid: sys::euid(),
            gid: sys::egid(),
        };
        Files {
            root,
            locks,
            sync,
            ids,
            cleaned: HashSet::new(),
            unsynced: HashMap::new(),
            pending: Vec::new(),
            max_pending: usize::MAX,
        }
    }

    /// True when writes wait for [`Files::flush`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Runs `op`; when it finds the process out of descriptors (EMFILE, ENFILE), gives back
    /// what can be given: the lock files not held and, with nothing pending, the folders
    /// waiting for their sync (synced now), then tries once more. With writes pending, it
    /// answers `None`: the batch must be flushed first, and later batches are kept smaller.
    fn with_descriptors<T>(
        &mut self,
        mut op: impl FnMut(&mut Files) -> Result<T>,
    ) -> Result<Option<T>> {
        match op(self) {
            Err(e) if out_of_descriptors(&e) => {
                self.locks.shrink();
                if !self.pending.is_empty() {
                    self.max_pending = self.pending.len().saturating_sub(1).max(1);
                    return Ok(None);
                }
                self.sync_folders()?;
                op(self).map(Some)
            }
            r => r.map(Some),
        }
    }

    /// Flushes to disk the folders that got new entries since the last call. A write is
    /// durable, and its record may be passed on, only after this.
    pub fn sync_folders(&mut self) -> Result<()> {
        for (_, folder) in self.unsynced.drain() {
            folder.sync()?;
        }
        Ok(())
    }

    /// Checks, without writing anything, that a write would not be refused: its folder does
    /// not lead out of the root through a symlink or through a file, and nothing but a regular
    /// file is at its name (nor, for a plain `create`, a file with other content). A record
    /// whose writes are an array checks them all first, so that a refused one leaves the
    /// others unwritten too.
    pub fn check(&mut self, spec: &Spec) -> Result<()> {
        match self.with_descriptors(|f| f.check_once(spec))? {
            Some(()) => Ok(()),
            None => Err(Error::internal("a write was checked with a batch pending")),
        }
    }

    fn check_once(&mut self, spec: &Spec) -> Result<()> {
        let shown = escape(&spec.path.display()).into_owned();
        let folder = match self.root.folder(&spec.path, false, false) {
            Ok(f) => f,
            // A folder still to be made: nothing there can refuse the write.
            Err(e) if e.code() == elf_core::exit::NOINPUT => return Ok(()),
            Err(e) => return Err(e),
        };
        let w = Writing {
            folder: &folder,
            sync: false,
            defer: false,
            deferred: RefCell::new(None),
            ids: self.ids,
            shown: &shown,
        };
        if spec.mode == Mode::Create && spec.unique {
            return Ok(());
        }
        let name = &spec.path.name;
        match w.existing(name)? {
            Existing::Other(what) => Err(w.refuse(what, name)),
            Existing::File(st)
                if spec.mode == Mode::Create && !w.same(name, &st, &spec.content)? =>
            {
                Err(Error::permission(format!(
                    "{shown}: refused: the file exists with other content (mode create)"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Performs one write; `marker` is the idempotency marker line of an append. The new
    /// content is on disk when it returns (unless `--no-sync`), its name once
    /// [`Files::sync_folders`] has run.
    pub fn apply(&mut self, spec: &Spec, marker: Option<&[u8]>) -> Result<Outcome> {
        match self.apply_in_batch(spec, marker, false)? {
            Applied::Done(o) | Applied::Deferred(o) => Ok(o),
            // Only writes left for a batch are ever pending, and this one does not batch.
            Applied::FlushFirst => Err(Error::internal("a write found a batch pending")),
        }
    }

    /// Performs one write, or with `defer` (and syncing on), may leave a replace or an append
    /// complete in its temporary file for [`Files::flush`] to finish with the others.
    ///
    /// When the process runs out of descriptors (EMFILE) with writes pending, it answers
    /// `FlushFirst` instead of failing, and keeps later batches smaller.
    pub fn apply_in_batch(
        &mut self,
        spec: &Spec,
        marker: Option<&[u8]>,
        defer: bool,
    ) -> Result<Applied> {
        let applied = self.with_descriptors(|f| f.apply_once(spec, marker, defer))?;
        Ok(applied.unwrap_or(Applied::FlushFirst))
    }

    fn apply_once(&mut self, spec: &Spec, marker: Option<&[u8]>, defer: bool) -> Result<Applied> {
        let defer = defer && self.sync && matches!(spec.mode, Mode::Replace | Mode::Append);
        if !defer && !self.pending.is_empty() {
            // Keeps the writes in record order.
            return Ok(Applied::FlushFirst);
        }
        if defer && self.pending.len() >= self.max_pending {
            // Descriptors ran short with a batch this large.
            return Ok(Applied::FlushFirst);
        }
        let shown = escape(&spec.path.display()).into_owned();
        let folder = self.root.folder(&spec.path, true, self.sync)?;
        let st = sys::fstat(folder.dir()).with_ctx(|| format!("{shown}: reading its folder"))?;
        let id = (st.st_dev, st.st_ino);
        if self
            .pending
            .iter()
            .any(|p| p.id == id && p.name == spec.path.name)
        {
            // It must see the content the pending write gives that file.
            return Ok(Applied::FlushFirst);
        }
        if self.cleaned.insert(id) {
            clean_leftovers(&folder);
        }
        let held = if self.pending.is_empty() {
            self.locks.lock(&folder, id, &spec.path.name, &shown)?
        } else {
            match self.locks.try_lock(&folder, id, &spec.path.name, &shown)? {
                Some(held) => held,
                None => return Ok(Applied::FlushFirst),
            }
        };
        let w = Writing {
            folder: &folder,
            sync: self.sync,
            defer,
            deferred: RefCell::new(None),
            ids: self.ids,
            shown: &shown,
        };
        let outcome = match spec.mode {
            Mode::Replace => w.replace(spec),
            Mode::Create if spec.unique => w.create_unique(spec),
            Mode::Create => w.create(spec),
            Mode::Append => w.append(spec, marker),
        }?;
        let deferred = w.deferred.take();
        drop(w);
        if let Some((temp, file)) = deferred {
            let target = sys::cname(&spec.path.name).with_ctx(|| shown.clone())?;
            self.pending.push(Pending {
                folder,
                id,
                name: spec.path.name.clone(),
                temp,
                target,
                file,
                shown,
                held,
            });
            return Ok(Applied::Deferred(outcome));
        }
        drop(held);
        if self.sync {
            // Also when the content was already there: a killed run may have renamed it in
            // without syncing the folder.
            self.unsynced.entry(id).or_insert(folder);
        }
        Ok(Applied::Done(outcome))
    }

    /// Finishes the pending writes, in order: their contents go to disk (one `syncfs(2)` per
    /// file system when there are several, else `fsync`), then each is renamed over its
    /// target, then the folders are synced. Returns one result per pending write. A write that
    /// fails is left undone (its temporary file removed, the target as it was); with `stop`,
    /// so are all the writes after it, as if the run had stopped there.
    pub fn flush(&mut self, stop: bool) -> Vec<Result<()>> {
        let pending = std::mem::take(&mut self.pending);
        let mut results = Vec::with_capacity(pending.len());
        if pending.is_empty() {
            return results;
        }
        // One syncfs per file system puts every temporary file on disk with one journal
        // commit; when it fails, each file is synced alone so the error lands on its write.
        let mut synced = pending.len() > 1;
        if synced {
            let mut devices: Vec<u64> = pending.iter().map(|p| p.id.0).collect();
            devices.sort_unstable();
            devices.dedup();
            for dev in devices {
                if let Some(p) = pending.iter().find(|p| p.id.0 == dev) {
                    synced &= sys::syncfs(p.folder.dir()).is_ok();
                }
            }
        }
        let mut failed = false;
        for p in pending {
            if failed && stop {
                p.abandon();
                continue;
            }
            let done = if synced {
                Ok(())
            } else {
                p.file
                    .sync_all()
                    .with_ctx(|| format!("{}: writing to disk", p.shown))
            }
            .and_then(|()| {
                sys::rename(p.folder.dir(), &p.temp, &p.target)
                    .with_ctx(|| format!("{}: renaming the new content into place", p.shown))
            });
            match done {
                Ok(()) => {
                    let Pending {
                        folder, id, held, ..
                    } = p;
                    drop(held);
                    self.unsynced.entry(id).or_insert(folder);
                    results.push(Ok(()));
                }
                Err(e) => {
                    p.abandon();
                    failed = true;
                    results.push(Err(e));
                }
            }
        }
        if let Err(e) = self.sync_folders() {
            // Nothing of the batch is known to be on disk: every write reports it.
            for r in results.iter_mut() {
                if r.is_ok() {
                    *r = Err(e.clone());
                }
            }
        }
        results
    }
}

/// True for an error of a process (or system) out of file descriptors.
fn out_of_descriptors(e: &Error) -> bool {
    matches!(e.os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The temporary-file name prefix and suffix.
const TMP_PREFIX: &str = ".elf-write.";
const TMP_SUFFIX: &str = ".tmp";

/// The writer's pid in a temporary file's name, if it is one of ours.
pub fn temp_pid(name: &[u8]) -> Option<i32> {
    let rest = name
        .strip_prefix(TMP_PREFIX.as_bytes())?
        .strip_suffix(TMP_SUFFIX.as_bytes())?;
    let (pid, random) = std::str::from_utf8(rest).ok()?.split_once('.')?;
    if random.len() != 16 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes leftover temporary files whose writer is gone: no process with that pid, and the
/// writer's lock on the file is free (so a writer in another pid namespace is never robbed).
fn clean_leftovers(folder: &Folder) {
    use std::os::fd::AsRawFd;
    let listing = std::fs::read_dir(format!("/proc/self/fd/{}", folder.fd.as_raw_fd()))
        .or_else(|_| std::fs::read_dir(&folder.path));
    let Ok(entries) = listing else { return };
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = temp_pid(name.as_bytes()) else {
            continue;
        };
        if pid == me || sys::pid_alive(pid) {
            continue;
        }
        let Ok(c) = sys::cname(&name) else { continue };
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let Ok(fd) = sys::openat(folder.dir(), &c, flags, 0) else {
            continue;
        };
        let file = File::from(fd);
        let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
        if regular && matches!(lockfile::try_lock(&file, true), Ok(true)) {
            let _ = sys::unlinkat(folder.dir(), &c);
        }
    }
}

/// The mode and owner a written file must end up with.
#[derive(Debug, Clone, Copy)]
struct Target {
    mode: u32,
    /// An existing file's owner, kept when running as root.
    owner: Option<(u32, u32)>,
}

/// A temporary file in the target's folder, removed on drop unless it was given its name.
struct Temp<'a> {
    dir: BorrowedFd<'a>,
    name: CString,
    file: File,
    placed: bool,
}

impl<'a> Temp<'a> {
    /// A new temporary file, made with `mode` (minus the umask; `finish` restores it).
    fn new(dir: BorrowedFd<'a>, pid: u32, mode: u32, shown: &str) -> Result<Temp<'a>> {
        let mut last = None;
        for _ in 0..16 {
            let name = format!(
                "{TMP_PREFIX}{pid}.{:016x}{TMP_SUFFIX}",
                rand::random::<u64>()
            );
            let c = CString::new(name).map_err(|_| Error::internal("temporary name"))?;
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
            match sys::openat(dir, &c, flags, mode) {
                Ok(fd) => {
                    let file = File::from(fd);
                    // Marks the file as alive for other runs' cleaning.
                    let _ = lockfile::try_lock(&file, true);
                    return Ok(Temp {
                        dir,
                        name: c,
                        file,
                        placed: false,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => last = Some(e),
                Err(e) => {
                    return Err(Error::io(
                        format_args!("{shown}: making a temporary file"),
                        &e,
                    ));
                }
            }
        }
        let e = last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EEXIST));
        Err(Error::io(
            format_args!("{shown}: making a temporary file"),
            &e,
        ))
    }

    fn write(&mut self, parts: &[&[u8]], shown: &str) -> Result<()> {
        for p in parts {
            self.file
                .write_all(p)
                .with_ctx(|| format!("{shown}: writing"))?;
        }
        Ok(())
    }

    /// Gives the file `target`'s owner and mode where they differ from what it was made
    /// with, then flushes it to disk when `sync`.
    fn finish(&mut self, target: Target, ids: Ids, sync: bool, shown: &str) -> Result<()> {
        let fd = self.file.as_fd();
        let foreign = target.owner.filter(|&o| o != (ids.uid, ids.gid));
        if let Some((uid, gid)) = foreign {
            // Keeping another user's file theirs is possible only as root; best effort.
            let _ = sys::fchown(fd, uid, gid);
        }
        // chown clears the setuid and setgid bits; the umask may have taken bits away.
        if foreign.is_some() || target.mode & ids.umask != 0 {
            sys::fchmod(fd, target.mode).with_ctx(|| format!("{shown}: setting the mode"))?;
        }
        if sync {
            self.file
                .sync_all()
                .with_ctx(|| format!("{shown}: writing to disk"))?;
        }
        Ok(())
    }

    fn rename_over(&mut self, to: &CString, shown: &str) -> Result<()> {
        sys::rename(self.dir, &self.name, to)
            .with_ctx(|| format!("{shown}: renaming the new content into place"))?;
        self.placed = true;
        Ok(())
    }

    fn place_new(&mut self, to: &CString, shown: &str) -> Result<bool> {
        let done = sys::rename_noreplace(self.dir, &self.name, to)
            .with_ctx(|| format!("{shown}: giving the new file its name"))?;
        self.placed = done;
        Ok(done)
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if !self.placed {
            let _ = sys::unlinkat(self.dir, &self.name);
        }
    }
}

/// One write in progress, under its lock.
struct Writing<'a> {
    folder: &'a Folder,
    sync: bool,
    /// Leave a replace or an append in its temporary file, unsynced, for the batch.
    defer: bool,
    /// The temporary file so left: its name and an open descriptor.
    deferred: RefCell<Option<(CString, File)>>,
    ids: Ids,
    shown: &'a str,
}

impl Writing<'_> {
    fn existing(&self, name: &OsStr) -> Result<Existing> {
        let c = sys::cname(name).with_ctx(|| self.shown.to_string())?;
        let st = match sys::lstatat(self.folder.dir(), &c) {
            Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                // A file system with a lower limit than the one checked in the path.
                return Err(Error::data(format!(
                    "{}: the name is too long for its file system ({} bytes; at most {})",
                    self.shown,
                    name.len(),
                    sys::name_max(self.folder.dir())
                )));
            }
            r => r.with_ctx(|| format!("{}: reading", self.shown))?,
        };
        Ok(match st {
            None => Existing::Missing,
            Some(st) => match sys::kind(&st) {
                libc::S_IFREG => Existing::File(st),
                libc::S_IFLNK => Existing::Other("a symlink"),
                libc::S_IFDIR => Existing::Other("a folder"),
                _ => Existing::Other("not a regular file"),
            },
        })
    }

    fn refuse(&self, what: &str, name: &OsStr) -> Error {
        Error::permission(format!(
            "{}: refused: {} is {what}",
            self.shown,
            escape(&name.to_string_lossy())
        ))
    }

    /// The content of an existing file whose size is probably `size`.
    fn read(&self, name: &OsStr, size: i64) -> Result<Vec<u8>> {
        let ctx = || format!("{}: reading", self.shown);
        let mut f = crate::target::open_read(self.folder.dir(), name).with_ctx(ctx)?;
        let mut data = vec![0; usize::try_from(size).unwrap_or(0)];
        let mut filled = 0;
        while filled < data.len() {
            match f.read(&mut data[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(ctx(), &e)),
            }
        }
        let full = filled == data.len();
        data.truncate(filled);
        if full {
            // It may have grown since it was measured.
            f.read_to_end(&mut data).with_ctx(ctx)?;
        }
        Ok(data)
    }

    fn same(&self, name: &OsStr, st: &libc::stat, content: &[u8]) -> Result<bool> {
        if u64::try_from(st.st_size).ok() != Some(content.len() as u64) {
            return Ok(false);
        }
        Ok(self.read(name, st.st_size)? == content)
    }

    fn new_file(&self, spec: &Spec) -> Target {
        Target {
            mode: spec.file_mode.unwrap_or(0o644 & !self.ids.umask),
            owner: None,
        }
    }

    fn kept(&self, st: &libc::stat) -> Target {
        let owner = (self.ids.uid == 0).then_some((st.st_uid, st.st_gid));
        Target {
            mode: st.st_mode & 0o7777,
            owner,
        }
    }

    /// A complete temporary file holding `parts`, with `target`'s mode and owner.
    fn prepare(&self, target: Target, parts: &[&[u8]]) -> Result<Temp<'_>> {
        let mut t = Temp::new(self.folder.dir(), self.ids.pid, target.mode, self.shown)?;
        t.write(parts, self.shown)?;
        t.finish(target, self.ids, self.sync && !self.defer, self.shown)?;
        Ok(t)
    }

    /// Renames `t` over `name`, or with `defer` keeps it for the batch.
    fn place_over(&self, mut t: Temp<'_>, name: &OsStr) -> Result<()> {
        if self.defer {
            let file = t.file.try_clone().with_ctx(|| self.shown.to_string())?;
            t.placed = true;
            *self.deferred.borrow_mut() = Some((t.name.clone(), file));
            return Ok(());
        }
        t.rename_over(&self.cname(name)?, self.shown)
    }

    fn cname(&self, name: &OsStr) -> Result<CString> {
        sys::cname(name).with_ctx(|| self.shown.to_string())
    }

    fn outcome(&self, path: RelPath, spec: &Spec, created: bool) -> Outcome {
        Outcome {
            path,
            bytes: spec.content.len() as u64,
            created,
            header_written: None,
            end: None,
        }
    }

    fn replace(&self, spec: &Spec) -> Result<Outcome> {
        let name = &spec.path.name;
        let target = match self.existing(name)? {
            Existing::File(st) if self.same(name, &st, &spec.content)? => {
                return Ok(self.outcome(spec.path.clone(), spec, false));
            }
            Existing::File(st) => self.kept(&st),
            Existing::Missing => self.new_file(spec),
            Existing::Other(what) => return Err(self.refuse(what, name)),
        };
        let t = self.prepare(target, &[&spec.content])?;
        self.place_over(t, name)?;
        Ok(self.outcome(spec.path.clone(), spec, true))
    }

    fn create(&self, spec: &Spec) -> Result<Outcome> {
        let name = &spec.path.name;
        let conflict = || {
            Error::permission(format!(
                "{}: refused: the file exists with other content (mode create)",
                self.shown
            ))
        };
        match self.existing(name)? {
            Existing::File(st) if self.same(name, &st, &spec.content)? => {
                return Ok(self.outcome(spec.path.clone(), spec, false));
            }
            Existing::File(_) => return Err(conflict()),
            Existing::Other(what) => return Err(self.refuse(what, name)),
            Existing::Missing => {}
        }
        let mut t = self.prepare(self.new_file(spec), &[&spec.content])?;
        if t.place_new(&self.cname(name)?, self.shown)? {
            return Ok(self.outcome(spec.path.clone(), spec, true));
        }
        // Made meanwhile by a writer that does not take our lock.
        match self.existing(name)? {
            Existing::File(st) if self.same(name, &st, &spec.content)? => {
                Ok(self.outcome(spec.path.clone(), spec, false))
            }
            _ => Err(conflict()),
        }
    }

    fn create_unique(&self, spec: &Spec) -> Result<Outcome> {
        let mut temp: Option<Temp<'_>> = None;
        let max = sys::name_max(self.folder.dir());
        let mut n: u32 = 1;
        while n <= 100_000 {
            let name = numbered(&spec.path.name, n, max);
            match self.existing(&name)? {
                Existing::File(st) if self.same(&name, &st, &spec.content)? => {
                    return Ok(self.outcome(spec.path.with_name(name), spec, false));
                }
                Existing::File(_) | Existing::Other(_) => {
                    n += 1;
                    continue;
                }
                Existing::Missing => {}
            }
            let t = match &mut temp {
                Some(t) => t,
                None => temp.insert(self.prepare(self.new_file(spec), &[&spec.content])?),
            };
            if t.place_new(&self.cname(&name)?, self.shown)? {
                return Ok(self.outcome(spec.path.with_name(name), spec, true));
            }
            // Taken meanwhile by a writer outside our lock: look at it again.
        }
        Err(Error::io_failure(format!(
            "{}: no free name up to -100000",
            self.shown
        )))
    }

    fn append(&self, spec: &Spec, marker: Option<&[u8]>) -> Result<Outcome> {
        let name = &spec.path.name;
        let (old, target) = match self.existing(name)? {
            Existing::File(st) => (self.read(name, st.st_size)?, self.kept(&st)),
            Existing::Missing => (Vec::new(), self.new_file(spec)),
            Existing::Other(what) => return Err(self.refuse(what, name)),
        };
        if let Some(m) = &marker {
            if has_marker(&old, m) {
                let mut o = self.outcome(spec.path.clone(), spec, false);
                o.header_written = Some(false);
                o.end = entry_end(&old, m, &spec.content);
                return Ok(o);
            }
        }
        let fresh = old.is_empty();
        let newline: &[u8] = if marker.is_some() && !fresh && !old.ends_with(b"\n") {
            b"\n"
        } else {
            b""
        };
        let header: &[u8] = if fresh {
            spec.header.as_deref().unwrap_or_default()
        } else {
            b""
        };
        let marker_line = marker.unwrap_or_default();
        let parts: [&[u8]; 5] = [&old, newline, header, marker_line, &spec.content];
        let t = self.prepare(target, &parts)?;
        self.place_over(t, name)?;
        let mut o = self.outcome(spec.path.clone(), spec, true);
        o.header_written = Some(fresh && spec.header.is_some());
        o.end = Some(parts.iter().map(|p| p.len() as u64).sum());
        Ok(o)
    }
}

/// The n-th candidate name: `x.md`, `x-2.md`, `x-3.md`; the number goes before the last
/// extension (`a.tar-2.gz`), at the end for names without one (`x-2`, `.profile-2`).
///
/// A candidate is at most `max` bytes: when the number does not fit, the part before the
/// extension is shortened (never inside a UTF-8 character) until it does, so a 255-byte
/// `x...x.md` has `x...x-2.md` of 255 bytes with two `x` fewer. An extension so long that no
/// byte of the stem would be left is treated as part of the stem. The names depend only on
/// the name, `n` and `max`, so a replay finds the same ones.
pub fn numbered(name: &OsStr, n: u32, max: usize) -> OsString {
    if n <= 1 {
        return name.to_os_string();
    }
    let b = name.as_bytes();
    let suffix = format!("-{n}");
    let with_ext = match b.iter().rposition(|&c| c == b'.') {
        Some(i) if i > 0 => Some(i),
        _ => None,
    };
    let build = |cut: usize| -> Option<Vec<u8>> {
        let (stem, ext) = b.split_at(cut);
        let room = max.checked_sub(ext.len() + suffix.len())?;
        let mut keep = room.min(stem.len());
        // Back off to the start of a UTF-8 character (a continuation byte is 0b10xxxxxx).
        while keep > 0 && keep < stem.len() && stem[keep] & 0xC0 == 0x80 {
            keep -= 1;
        }
        if keep == 0 {
            return None;
        }
        let mut out = stem[..keep].to_vec();
        out.extend_from_slice(suffix.as_bytes());
        out.extend_from_slice(ext);
        Some(out)
    };
    let out = with_ext
        .and_then(build)
        .or_else(|| build(b.len()))
        .unwrap_or_else(|| {
            // Only when `max` is shorter than the number itself: no name can fit.
            let mut out = b.to_vec();
            out.extend_from_slice(suffix.as_bytes());
            out
        });
    OsString::from(OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names() {
        let n = |s: &str, k| {
            numbered(OsStr::new(s), k, 255)
                .to_string_lossy()
                .into_owned()
        };
        assert_eq!(n("x.md", 1), "x.md");
        assert_eq!(n("x.md", 2), "x-2.md");
        assert_eq!(n("a.tar.gz", 3), "a.tar-3.gz");
        assert_eq!(n("x", 2), "x-2");
        assert_eq!(n(".profile", 2), ".profile-2");
    }

    #[test]
    fn numbered_names_fit_the_limit() {
        let n = |s: &str, k, max| {
            numbered(OsStr::new(s), k, max)
                .into_string()
                .expect("still UTF-8")
        };
        let long = format!("{}.md", "x".repeat(252));
        assert_eq!(n(&long, 1, 255), long);
        assert_eq!(n(&long, 2, 255), format!("{}-2.md", "x".repeat(250)));
        assert_eq!(
            n(&long, 100_000, 255),
            format!("{}-100000.md", "x".repeat(245))
        );
        // Names near the limit keep their length under it; short ones are untouched.
        assert_eq!(n("ab.md", 2, 7), "ab-2.md");
        assert_eq!(n("ab.md", 2, 6), "a-2.md");
        assert_eq!(n("abc", 2, 4), "ab-2");
        // Never inside a character: "é" is 2 bytes, "€" 3.
        let e = format!("{}.md", "é".repeat(126)); // 252 + 3 bytes
        let got = n(&e, 2, 255);
        assert!(got.len() <= 255 && got.ends_with("-2.md"), "{got}");
        assert_eq!(got, format!("{}-2.md", "é".repeat(125)));
        let euro = format!("{}.md", "€".repeat(84)); // 252 + 3 bytes
        assert_eq!(n(&euro, 2, 255), format!("{}-2.md", "€".repeat(83)));
        assert_eq!(n(&euro, 10, 255), format!("{}-10.md", "€".repeat(83)));
        // An extension too long to keep a stem: the number goes at the end.
        let ext = format!("a.{}", "y".repeat(253));
        assert_eq!(n(&ext, 2, 255), format!("a.{}-2", "y".repeat(251)));
        for k in [2, 9, 10, 99_999, 100_000] {
            for name in [&long, &e, &euro, &ext] {
                assert!(n(name, k, 255).len() <= 255);
                assert_eq!(n(name, k, 255), n(name, k, 255));
            }
        }
    }

    #[test]
    fn temp_names_are_recognised() {
        assert_eq!(temp_pid(b".elf-write.123.00112233aabbccdd.tmp"), Some(123));
        assert_eq!(temp_pid(b".elf-write.123.0011.tmp"), None);
        assert_eq!(temp_pid(b"elf-write.123.00112233aabbccdd.tmp"), None);
        assert_eq!(temp_pid(b".elf-write.x.00112233aabbccdd.tmp"), None);
    }
}
