//! Trees read, changed and written by elf-commit itself, with the trees it has seen kept in
//! memory.
//!
//! An object's id is the hash of its content, so a tree read (or written) once under an id is
//! that tree forever: the memory kept here can never be stale, whatever other processes do to
//! the repository. A stream of commits then reads each tree at most once: the tree a commit
//! builds on is, most of the time, the one the previous commit wrote. Only the trees on the
//! way to a changed path are written again; the rest are referred to by id.
//!
//! What is written is what libgit2's `git_tree_create_updated` writes for the same changes
//! (entries in git's order, modes in octal without leading zeros, a folder emptied by the
//! changes left out, a file replaced by a folder), as loose objects through libgit2's object
//! database.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use git2::{ObjectType, Oid, Repository, Signature};

/// A tree entry: a name, a mode and the id of what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Rc<[u8]>,
    pub mode: u32,
    pub id: Oid,
}

impl Entry {
    pub fn is_tree(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }
}

/// A change to one path: its new id and mode, or `None` to remove it.
pub type Change = Option<(Oid, u32)>;

/// The changes to one entry of a tree: to the entry itself, and to paths below it.
type Group<'a> = (Option<Change>, Vec<(&'a [u8], Change)>);

/// The trees (and commits' trees) seen lately.
#[derive(Default)]
pub struct Trees {
    trees: HashMap<Oid, (Rc<Vec<Entry>>, u64)>,
    commits: HashMap<Oid, (Oid, u64)>,
    generation: u64,
}

/// When the memory holds more trees than this, those not used by the latest commit are let go.
const KEEP: usize = 64;

impl Trees {
    /// Starts a commit: trees not used since the previous one are let go once there are many.
    pub fn next_generation(&mut self) {
        if self.trees.len() > KEEP {
            let last = self.generation;
            self.trees.retain(|_, (_, g)| *g >= last);
        }
        if self.commits.len() > KEEP {
            let last = self.generation;
            self.commits.retain(|_, (_, g)| *g >= last);
        }
        self.generation += 1;
    }

    /// The tree of a commit.
    pub fn commit_tree(&mut self, repo: &Repository, commit: Oid) -> Result<Oid, git2::Error> {
        let generation = self.generation;
        if let Some((tree, g)) = self.commits.get_mut(&commit) {
            *g = generation;
            return Ok(*tree);
        }
        let tree = repo.find_commit(commit)?.tree_id();
        self.commits.insert(commit, (tree, generation));
        Ok(tree)
    }

    /// The entries of a tree, in git's order.
    pub fn entries(&mut self, repo: &Repository, tree: Oid) -> Result<Rc<Vec<Entry>>, git2::Error> {
        let generation = self.generation;
        if let Some((entries, g)) = self.trees.get_mut(&tree) {
            *g = generation;
            return Ok(Rc::clone(entries));
        }
        let odb = repo.odb()?;
        let obj = odb.read(tree)?;
        if obj.kind() != ObjectType::Tree {
            return Err(git2::Error::from_str(&format!("{tree} is not a tree")));
        }
        let entries = Rc::new(
            parse(obj.data())
                .ok_or_else(|| git2::Error::from_str(&format!("tree {tree} is corrupt")))?,
        );
        self.trees.insert(tree, (Rc::clone(&entries), generation));
        Ok(entries)
    }

    /// The entry at `p` (slash-separated, relative) below tree `root`.
    pub fn get(
        &mut self,
        repo: &Repository,
        root: Oid,
        p: &Path,
    ) -> Result<Option<Entry>, git2::Error> {
        let mut tree = root;
        let mut parts = p.as_os_str().as_bytes().split(|b| *b == b'/').peekable();
        while let Some(name) = parts.next() {
            let entries = self.entries(repo, tree)?;
            let Some(e) = find(&entries, name).map(|i| entries[i].clone()) else {
                return Ok(None);
            };
            if parts.peek().is_none() {
                return Ok(Some(e));
            }
            if !e.is_tree() {
                return Ok(None);
            }
            tree = e.id;
        }
        Ok(None)
    }

    /// Every path that is not a folder below tree `tree`, which is at `prefix`.
    pub fn files_below(
        &mut self,
        repo: &Repository,
        tree: Oid,
        prefix: &Path,
        out: &mut Vec<PathBuf>,
    ) -> Result<(), git2::Error> {
        let entries = self.entries(repo, tree)?;
        for e in entries.iter() {
            let p = prefix.join(OsStr::from_bytes(&e.name));
            if e.is_tree() {
                self.files_below(repo, e.id, &p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }

    /// The tree `root` (none: the empty tree) with `changes` applied, written; the id of the
    /// new root tree, or `root` itself when nothing changed (`None` only when there was no
    /// root and nothing was added).
    pub fn update(
        &mut self,
        repo: &Repository,
        root: Option<Oid>,
        changes: &BTreeMap<PathBuf, Change>,
    ) -> Result<Option<Oid>, git2::Error> {
        let list: Vec<(&[u8], Change)> = changes
            .iter()
            .map(|(p, c)| (p.as_os_str().as_bytes(), *c))
            .collect();
        self.apply(repo, root, &list, true)
    }

    fn apply(
        &mut self,
        repo: &Repository,
        base: Option<Oid>,
        changes: &[(&[u8], Change)],
        is_root: bool,
    ) -> Result<Option<Oid>, git2::Error> {
        let old = match base {
            Some(t) => self.entries(repo, t)?,
            None => Rc::new(Vec::new()),
        };
        // The changes by first component: one to the entry itself, and those below it.
        let mut groups: BTreeMap<&[u8], Group<'_>> = BTreeMap::new();
        for (path, change) in changes {
            match path.iter().position(|b| *b == b'/') {
                Some(i) => groups
                    .entry(&path[..i])
                    .or_default()
                    .1
                    .push((&path[i + 1..], *change)),
                None => groups.entry(path).or_default().0 = Some(*change),
            }
        }
        let mut entries: Vec<Entry> = (*old).clone();
        let mut changed = false;
        for (name, (direct, below)) in groups {
            if name.is_empty() {
                return Err(git2::Error::from_str("empty path component"));
            }
            let pos = find(&entries, name);
            let current = pos.map(|i| entries[i].clone());
            let mut target = current.clone();
            if let Some(d) = direct {
                target = d.map(|(id, mode)| Entry {
                    name: Rc::from(name),
                    mode,
                    id,
                });
            }
            if !below.is_empty() {
                let sub_base = target.as_ref().filter(|e| e.is_tree()).map(|e| e.id);
                match self.apply(repo, sub_base, &below, false)? {
                    Some(id) => {
                        target = Some(Entry {
                            name: Rc::from(name),
                            mode: 0o040000,
                            id,
                        });
                    }
                    // A folder emptied by the changes goes; nothing added below a file
                    // leaves the file.
                    None if sub_base.is_some() => target = None,
                    None => {}
                }
            }
            if target == current {
                continue;
            }
            changed = true;
            if let Some(i) = pos {
                entries.remove(i);
            }
            if let Some(e) = target {
                let at = entries
                    .binary_search_by(|x| order(&x.name, x.is_tree(), &e.name, e.is_tree()))
                    .unwrap_or_else(|i| i);
                entries.insert(at, e);
            }
        }
        if !changed {
            return Ok(base);
        }
        if entries.is_empty() && !is_root {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(entries.len() * 48);
        for e in &entries {
            let _ = write!(buf, "{:o} ", e.mode);
            buf.extend_from_slice(&e.name);
            buf.push(0);
            buf.extend_from_slice(e.id.as_bytes());
        }
        let id = repo.odb()?.write(ObjectType::Tree, &buf)?;
        self.trees.insert(id, (Rc::new(entries), self.generation));
        Ok(Some(id))
    }

    /// Writes a commit, as `git_commit_create` writes it, and remembers its tree.
    pub fn write_commit(
        &mut self,
        repo: &Repository,
        author: &Signature<'_>,
        committer: &Signature<'_>,
        message: &str,
        tree: Oid,
        parents: &[Oid],
    ) -> Result<Oid, git2::Error> {
        let buf = commit_buffer(author, committer, message, tree, parents);
        let id = repo.odb()?.write(ObjectType::Commit, &buf)?;
        self.commits.insert(id, (tree, self.generation));
        Ok(id)
    }
}

/// The bytes of a commit object, exactly as libgit2 1.9 makes them.
pub fn commit_buffer(
    author: &Signature<'_>,
    committer: &Signature<'_>,
    message: &str,
    tree: Oid,
    parents: &[Oid],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256 + message.len());
    let _ = writeln!(buf, "tree {tree}");
    for p in parents {
        let _ = writeln!(buf, "parent {p}");
    }
    signature_line(&mut buf, "author", author);
    signature_line(&mut buf, "committer", committer);
    buf.push(b'\n');
    // libgit2 takes the message as a C string.
    let m = message.as_bytes();
    buf.extend_from_slice(&m[..m.iter().position(|b| *b == 0).unwrap_or(m.len())]);
    buf
}

fn signature_line(buf: &mut Vec<u8>, header: &str, sig: &Signature<'_>) {
    let when = sig.when();
    let offset = when.offset_minutes();
    let sign = if offset < 0 || when.sign() == '-' {
        '-'
    } else {
        '+'
    };
    let offset = offset.unsigned_abs();
    buf.extend_from_slice(header.as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(sig.name_bytes());
    buf.extend_from_slice(b" <");
    buf.extend_from_slice(sig.email_bytes());
    // `%u` of `(unsigned)time`, as libgit2 writes it.
    let _ = writeln!(
        buf,
        "> {} {sign}{:02}{:02}",
        when.seconds() as u32,
        offset / 60,
        offset % 60
    );
}

/// Git's order of tree entries: by name, a folder's name compared as if it ended in `/`.
pub fn order(a: &[u8], a_tree: bool, b: &[u8], b_tree: bool) -> Ordering {
    let n = a.len().min(b.len());
    match a[..n].cmp(&b[..n]) {
        Ordering::Equal => {}
        o => return o,
    }
    let next = |s: &[u8], tree: bool| match s.get(n) {
        Some(c) => *c,
        None if tree => b'/',
        None => 0,
    };
    next(a, a_tree).cmp(&next(b, b_tree))
}

/// Where the entry called `name` is, whether a folder or not.
fn find(entries: &[Entry], name: &[u8]) -> Option<usize> {
    [false, true].into_iter().find_map(|tree| {
        entries
            .binary_search_by(|e| order(&e.name, e.is_tree(), name, tree))
            .ok()
            .filter(|i| *entries[*i].name == *name)
    })
}

/// A tree object's entries; `None` when it is malformed.
fn parse(mut data: &[u8]) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let sp = data.iter().position(|b| *b == b' ')?;
        let mut mode = 0u32;
        for c in &data[..sp] {
            if !(b'0'..=b'7').contains(c) || mode > (u32::MAX >> 3) {
                return None;
            }
            mode = mode * 8 + u32::from(c - b'0');
        }
        data = &data[sp + 1..];
        let nul = data.iter().position(|b| *b == 0)?;
        let name: Rc<[u8]> = Rc::from(&data[..nul]);
        data = &data[nul + 1..];
        let id = Oid::from_bytes(data.get(..20)?).ok()?;
        data = &data[20..];
        out.push(Entry { name, mode, id });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_order_puts_folders_after_their_prefix() {
        assert_eq!(order(b"a", true, b"a.txt", false), Ordering::Greater);
        assert_eq!(order(b"a", false, b"a.txt", false), Ordering::Less);
        assert_eq!(order(b"a", true, b"a0", false), Ordering::Less);
        assert_eq!(order(b"ab", false, b"ab", false), Ordering::Equal);
    }

    fn scratch() -> (PathBuf, Repository) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "elf-commit-tree-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let repo = Repository::init(&dir).expect("init");
        (dir, repo)
    }

    /// The same changes through libgit2's `TreeUpdateBuilder` and through `Trees::update`
    /// give the same tree.
    #[test]
    fn updates_match_libgit2() {
        let (dir, repo) = scratch();
        let blob = |s: &str| repo.blob(s.as_bytes()).expect("blob");
        let (a, b, c) = (blob("a"), blob("b"), blob("c"));
        let mut start = BTreeMap::new();
        for p in [
            "x", "x.txt", "d/e/f", "d/g", "d.md", "d0", "m/1", "m/2", "only/one",
        ] {
            start.insert(PathBuf::from(p), Some((a, 0o100644)));
        }
        start.insert(PathBuf::from("exe"), Some((b, 0o100755)));
        let mut trees = Trees::default();
        let root = trees
            .update(&repo, None, &start)
            .expect("update")
            .expect("a tree");
        let mut idx = git2::Index::new().expect("index");
        for (p, c) in &start {
            let (id, mode) = c.expect("added");
            let e = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode,
                uid: 0,
                gid: 0,
                file_size: 0,
                id,
                flags: 0,
                flags_extended: 0,
                path: p.as_os_str().as_bytes().to_vec(),
            };
            idx.add(&e).expect("add");
        }
        assert_eq!(idx.write_tree_to(&repo).expect("write tree"), root);

        let cases: Vec<Vec<(&str, Change)>> = vec![
            vec![("x", Some((b, 0o100644)))],
            vec![("d/e/f", None)],
            vec![("d/e/f", None), ("d/g", None)],
            vec![("only/one", None), ("new/deep/file", Some((c, 0o100644)))],
            vec![("m/3", Some((c, 0o100755))), ("m/1", Some((a, 0o100644)))],
            vec![("x/inside", Some((c, 0o100644)))],
            vec![("d", Some((c, 0o100644)))],
            vec![("absent", None), ("x.txt/no", None)],
            vec![("exe", Some((b, 0o120000))), ("d.md", None), ("d0", None)],
        ];
        for case in cases {
            let changes: BTreeMap<PathBuf, Change> =
                case.iter().map(|(p, c)| (PathBuf::from(p), *c)).collect();
            let ours = trees.update(&repo, Some(root), &changes).expect("ours");
            let base = repo.find_tree(root).expect("root");
            let mut ub = git2::build::TreeUpdateBuilder::new();
            for (p, c) in &case {
                match c {
                    Some((id, mode)) => {
                        let fm = match mode {
                            0o100755 => git2::FileMode::BlobExecutable,
                            0o120000 => git2::FileMode::Link,
                            _ => git2::FileMode::Blob,
                        };
                        ub.upsert(p, *id, fm);
                    }
                    None => {
                        ub.remove(p);
                    }
                }
            }
            match ub.create_updated(&repo, &base) {
                Ok(theirs) => assert_eq!(ours, Some(theirs), "{case:?}"),
                // libgit2 refuses a path below a file: the tree made instead has the file
                // replaced by a folder, or, for a removal, is the same tree.
                Err(e) => match case[0].1 {
                    Some((id, _)) => {
                        let t = ours.expect("a tree");
                        let got = trees.get(&repo, t, Path::new(case[0].0)).expect("get");
                        assert_eq!(got.map(|e| e.id), Some(id), "{case:?}: {e}");
                    }
                    None => assert_eq!(ours, Some(root), "{case:?}: {e}"),
                },
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn commit_buffer_matches_libgit2() {
        let (dir, repo) = scratch();
        let tree = repo
            .find_tree(
                repo.treebuilder(None)
                    .and_then(|b| b.write())
                    .expect("tree"),
            )
            .expect("find");
        let parent_id = {
            let sig = Signature::new("P", "p@x", &git2::Time::new(5, 0)).expect("sig");
            repo.commit(None, &sig, &sig, "p\n", &tree, &[])
                .expect("commit")
        };
        let parent = repo.find_commit(parent_id).expect("parent");
        for (secs, off) in [(1_700_000_000, 0), (1_700_000_000, -330), (99, 125)] {
            let a = Signature::new("A U Thor", "a@example.com", &git2::Time::new(secs, off))
                .expect("sig");
            let c = Signature::new("Com Mitter", "c@ex", &git2::Time::new(secs + 7, -off))
                .expect("sig");
            let msg = "subject\n\nbody line\n";
            let theirs = repo
                .commit_create_buffer(&a, &c, msg, &tree, &[&parent])
                .expect("buffer");
            let ours = commit_buffer(&a, &c, msg, tree.id(), &[parent_id]);
            assert_eq!(&ours[..], &theirs[..]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
