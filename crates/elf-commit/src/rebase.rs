//! Replaying this machine's unpushed record commits onto the remote's head, with the ELF
//! files' append-only rule instead of a textual merge.
//!
//! Each local commit is replayed path by path, in order, onto the commit replayed before it
//! (the first onto the remote's head):
//!
//! - a pure append (the parent's blob is a prefix of the commit's blob): the replayed blob is
//!   the new base's blob followed by the appended bytes, so the remote's entries come first
//!   and ours after them, the same on every machine;
//! - a new heuristics file whose domain the base has too: the base's file, then our entries
//!   (our copy of the header, identical, is dropped);
//! - an experiment's folder (`experiments/active/STAMP_SLUG/`, claimed with mkdir by
//!   start-experiment.sh) whose name the base already has with another `hypothesis.md` (two
//!   experiments of one slug started in the same second on two machines): our whole folder
//!   takes `STAMP_SLUG-2` (or the first free `-N`), the rule a claim on one machine follows,
//!   and later local commits follow it there;
//! - any other new file whose name the base already has with other content (two failures
//!   with the same title on the same day on two machines): ours takes `NAME-2.md` (or the
//!   first free `-N`), elf-write's unique-name rule;
//! - a change to a path the remote left as our parent had it: carried over as it is;
//! - anything else (a hand edit of one file on two machines, a file deleted on one side and
//!   changed on the other) is a real conflict: [`Conflict`], nothing is changed.
//!
//! While replaying, every `## H-<id>:` heading in our appended bytes whose id is in
//! `renumber` takes its new id (see `renumber.rs` for how the ids are chosen). Commits keep
//! their author, committer and message, so replaying the same commits onto the same head
//! gives the same commits (a run that was killed and is run again makes no new objects).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use git2::build::TreeUpdateBuilder;
use git2::{Commit, Delta, FileMode, ObjectType, Oid, Repository, Sort, Tree};

use crate::repository::git_error;
use elf_core::Error;
use elf_core::record::Record;
use serde_json::Value;

/// The folder of the heuristics files.
pub const HEURISTICS: &str = "memory/heuristics/";

/// The folder of the experiments' folders.
pub const EXPERIMENTS: &str = "experiments/active/";

/// The experiment folder `path` lies in (`experiments/active/NAME`), if any.
pub fn experiment_folder(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(EXPERIMENTS)?;
    let i = rest.find('/').filter(|&i| i > 0)?;
    Some(&path[..EXPERIMENTS.len() + i])
}

/// `path` where the replay put it: a file renamed, or a file in a folder renamed.
fn follow(path: &str, moved: &BTreeMap<String, String>, dirs: &BTreeMap<String, String>) -> String {
    if let Some(to) = moved.get(path) {
        return to.clone();
    }
    match experiment_folder(path).and_then(|d| dirs.get(d).map(|to| (d, to))) {
        Some((d, to)) => format!("{to}{}", &path[d.len()..]),
        None => path.to_string(),
    }
}

/// A change both sides made that no rule resolves.
#[derive(Debug)]
pub struct Conflict(pub String);

/// A local heuristic entry (a `## H-<id>: rule` heading in bytes a local commit added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    pub path: String,
    pub id: u64,
    pub rule: String,
}

/// What a replay made.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The new head.
    pub head: Option<Oid>,
    /// Files renamed because the base had their name: (from, to, the record key of the file);
    /// an experiment's folder renamed: (folder, new folder, None).
    pub renames: Vec<(String, String, Option<String>)>,
    /// Record keys whose entry took a new id: key -> new id.
    pub renumbered: BTreeMap<String, u64>,
}

/// The local commits from `base` (exclusive; None: the whole history, unrelated to the
/// remote's) to `head`, oldest first; a merge commit among them is refused (it cannot be
/// replayed path by path).
pub fn local_commits<'r>(
    repo: &'r Repository,
    base: Option<Oid>,
    head: Oid,
) -> Result<Result<Vec<Commit<'r>>, Conflict>, Error> {
    let mut walk = repo
        .revwalk()
        .map_err(|e| git_error("walking history", &e))?;
    walk.push(head)
        .map_err(|e| git_error("walking history", &e))?;
    if let Some(base) = base {
        walk.hide(base)
            .map_err(|e| git_error("walking history", &e))?;
    }
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)
        .map_err(|e| git_error("walking history", &e))?;
    let mut out = Vec::new();
    for id in walk {
        let id = id.map_err(|e| git_error("walking history", &e))?;
        let c = repo
            .find_commit(id)
            .map_err(|e| git_error("reading a commit", &e))?;
        if c.parent_count() > 1 {
            return Ok(Err(Conflict(format!(
                "commit {id} is a merge; only plain commits can be replayed onto the remote"
            ))));
        }
        out.push(c);
    }
    Ok(Ok(out))
}

/// The blob at `path` in `tree`, as bytes.
pub fn blob_at(
    repo: &Repository,
    tree: &Tree,
    path: &str,
) -> Result<Option<(Oid, Vec<u8>)>, Error> {
    match tree.get_path(Path::new(path)) {
        Ok(e) if e.kind() == Some(ObjectType::Blob) => {
            let b = repo
                .find_blob(e.id())
                .map_err(|e| git_error("reading a blob", &e))?;
            Ok(Some((e.id(), b.content().to_vec())))
        }
        Ok(_) => Ok(None),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(git_error("reading a tree", &e)),
    }
}

/// The `## H-<id>: rule` headings of `text`, in order.
pub fn headings(text: &[u8]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        if let Some((id, rule)) = heading(line) {
            out.push((id, rule));
        }
    }
    out
}

fn heading(line: &[u8]) -> Option<(u64, String)> {
    let rest = line.strip_prefix(b"## H-")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 18 || rest.get(digits) != Some(&b':') {
        return None;
    }
    let id = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rule = String::from_utf8_lossy(&rest[digits + 1..])
        .trim()
        .to_string();
    Some((id, rule))
}

/// Every heading id of the heuristics files of `tree`.
pub fn tree_ids(repo: &Repository, tree: &Tree) -> Result<BTreeSet<u64>, Error> {
    let mut ids = BTreeSet::new();
    let Ok(e) = tree.get_path(Path::new(HEURISTICS.trim_end_matches('/'))) else {
        return Ok(ids);
    };
    let Ok(sub) = repo.find_tree(e.id()) else {
        return Ok(ids);
    };
    for entry in sub.iter() {
        let is_md = entry.name_bytes().ends_with(b".md");
        if is_md && entry.kind() == Some(ObjectType::Blob) {
            let b = repo
                .find_blob(entry.id())
                .map_err(|e| git_error("reading a blob", &e))?;
            ids.extend(headings(b.content()).into_iter().map(|(id, _)| id));
        }
    }
    Ok(ids)
}

/// What a local commit changed at each path: (path, parent's blob, commit's blob).
type Change = (String, Option<(Oid, Vec<u8>)>, Option<(Oid, Vec<u8>)>);

fn changes(repo: &Repository, c: &Commit) -> Result<Vec<Change>, Error> {
    let pt = match c.parent_count() {
        0 => None,
        _ => Some(
            c.parent(0)
                .and_then(|p| p.tree())
                .map_err(|e| git_error("reading a commit", &e))?,
        ),
    };
    let ct = c.tree().map_err(|e| git_error("reading a tree", &e))?;
    let diff = repo
        .diff_tree_to_tree(pt.as_ref(), Some(&ct), None)
        .map_err(|e| git_error("comparing trees", &e))?;
    let mut out = Vec::new();
    for d in diff.deltas() {
        let path = match d.new_file().path().or(d.old_file().path()) {
            Some(p) => p.to_string_lossy().into_owned(),
            None => continue,
        };
        let old = match &pt {
            Some(pt) if d.status() != Delta::Added => blob_at(repo, pt, &path)?,
            _ => None,
        };
        let new = if d.status() == Delta::Deleted {
            None
        } else {
            blob_at(repo, &ct, &path)?
        };
        out.push((path, old, new));
    }
    Ok(out)
}

/// The bytes a local change added to a heuristics file: the appended part, or the whole new
/// file; None for any other change.
fn added<'a>(old: Option<&'a [u8]>, new: &'a [u8]) -> Option<&'a [u8]> {
    match old {
        None => Some(new),
        Some(o) if new.starts_with(o) => Some(&new[o.len()..]),
        Some(_) => None,
    }
}

/// The heuristic entries the local commits added, for the collision check.
pub fn local_entries(repo: &Repository, commits: &[Commit]) -> Result<Vec<LocalEntry>, Error> {
    let mut out = Vec::new();
    for c in commits {
        for (path, old, new) in changes(repo, c)? {
            let Some((_, new)) = new else { continue };
            if !path.starts_with(HEURISTICS) {
                continue;
            }
            if let Some(bytes) = added(old.as_ref().map(|o| o.1.as_slice()), &new) {
                for (id, rule) in headings(bytes) {
                    out.push(LocalEntry {
                        path: path.clone(),
                        id,
                        rule,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The record key of the marker line `<!-- elf:KEY -->` (or `KEY N`).
fn marker_key(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"<!-- elf:")?.strip_suffix(b" -->")?;
    let key = rest.split(|&b| b == b' ').next()?;
    Some(String::from_utf8_lossy(key).into_owned())
}

/// The key of the last marker line in `text`.
pub fn last_key(text: &[u8]) -> Option<String> {
    text.split(|&b| b == b'\n').rev().find_map(marker_key)
}

/// `bytes` with the headings in `ids` renumbered; the keys of the entries renumbered go to
/// `keys`.
fn renumber(bytes: &[u8], ids: &BTreeMap<u64, u64>, keys: &mut BTreeMap<String, u64>) -> Vec<u8> {
    if ids.is_empty() {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut key = None;
    let mut lines = bytes.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if let Some(k) = marker_key(line) {
            key = Some(k);
        }
        match heading(line).and_then(|(id, _)| ids.get(&id).map(|n| (id, *n))) {
            Some((id, new)) => {
                let tail = &line[5 + id.to_string().len()..];
                out.extend_from_slice(format!("## H-{new}").as_bytes());
                out.extend_from_slice(tail);
                if let Some(k) = key.take() {
                    keys.insert(k, new);
                }
            }
            None => out.extend_from_slice(line),
        }
        if lines.peek().is_some() {
            out.push(b'\n');
        }
    }
    out
}

/// The header of a new heuristics file: its bytes before the first marker line or `## `
/// heading.
fn header_len(text: &[u8]) -> usize {
    let mut at = 0;
    for line in text.split(|&b| b == b'\n') {
        if line.starts_with(b"<!-- elf:") || line.starts_with(b"## ") {
            return at;
        }
        at += line.len() + 1;
    }
    text.len()
}

/// Points the writes of `rec` (one or a list) into the folder `from` at the folder `to`;
/// whether any was.
pub fn move_write_paths(rec: &mut Record, from: &str, to: &str) -> bool {
    let mut any = false;
    let mut one = |w: &mut Value| {
        let Some(Value::String(p)) = w.get_mut("path") else {
            return;
        };
        if let Some(rest) = p.strip_prefix(from).filter(|r| r.starts_with('/')) {
            *p = format!("{to}{rest}");
            any = true;
        }
    };
    match rec.get_mut("write") {
        Some(Value::Array(ws)) => ws.iter_mut().for_each(&mut one),
        Some(w) => one(w),
        None => {}
    }
    any
}

/// A free name for `path` in `taken`: `NAME-2.md`, `NAME-3.md`, ...
fn free_name(path: &str, taken: &dyn Fn(&str) -> bool) -> String {
    let (stem, ext) = match path.rfind('.') {
        Some(i) if i > path.rfind('/').map_or(0, |s| s + 1) => (&path[..i], &path[i..]),
        _ => (path, ""),
    };
    (2..)
        .map(|n| format!("{stem}-{n}{ext}"))
        .find(|p| !taken(p))
        .unwrap_or_else(|| path.to_string())
}

/// A free name for the folder `dir` in `taken`: `DIR-2`, `DIR-3`, ... (start-experiment.sh's
/// claim).
fn free_folder(dir: &str, taken: &dyn Fn(&str) -> bool) -> String {
    (2..)
        .map(|n| format!("{dir}-{n}"))
        .find(|p| !taken(p))
        .unwrap_or_else(|| dir.to_string())
}

/// Replays `commits` onto `onto`, renumbering the headings in `ids`.
pub fn replay(
    repo: &Repository,
    commits: &[Commit],
    onto: Oid,
    ids: &BTreeMap<u64, u64>,
) -> Result<Result<Replayed, Conflict>, Error> {
    let mut out = Replayed::default();
    let mut base = repo
        .find_commit(onto)
        .map_err(|e| git_error("reading the remote's head", &e))?;
    // Paths a local file was renamed to, and experiment folders, so that later local commits
    // follow them.
    let mut moved: BTreeMap<String, String> = BTreeMap::new();
    let mut dirs: BTreeMap<String, String> = BTreeMap::new();
    // Our own folders are taken too: a second experiment of the slug may have claimed `-2` here.
    let ours = match commits.last() {
        Some(c) => Some(c.tree().map_err(|e| git_error("reading a tree", &e))?),
        None => None,
    };
    for c in commits {
        let bt = base.tree().map_err(|e| git_error("reading a tree", &e))?;
        let mut upd = TreeUpdateBuilder::new();
        let mut touched = false;
        let mut added_names: BTreeSet<String> = BTreeSet::new();
        let changes = changes(repo, c)?;
        // An experiment's folder moves whole, decided before any of its files is replayed.
        for (path, old, new) in &changes {
            let (None, Some((_, n))) = (old, new) else {
                continue;
            };
            let path = follow(path, &moved, &dirs);
            let Some(dir) = experiment_folder(&path) else {
                continue;
            };
            if path[dir.len()..] != *"/hypothesis.md" || bt.get_path(Path::new(dir)).is_err() {
                continue;
            }
            if blob_at(repo, &bt, &path)?.is_some_and(|(_, b)| b == *n) {
                continue; // our own experiment, already there
            }
            // A folder of ours holding this very experiment is not taken: a run killed while
            // the files moved has replayed the record into the folder it was moved to.
            let mine = |t: &Tree, p: &str| {
                t.get_path(Path::new(p)).is_ok()
                    && !matches!(
                        blob_at(repo, t, &format!("{p}/hypothesis.md")),
                        Ok(Some((_, ref b))) if b == n
                    )
            };
            let taken = |p: &str| {
                dirs.values().any(|d| d == p)
                    || bt.get_path(Path::new(p)).is_ok()
                    || ours.as_ref().is_some_and(|t| mine(t, p))
            };
            let to = free_folder(dir, &taken);
            out.renames.push((dir.to_string(), to.clone(), None));
            dirs.insert(dir.to_string(), to);
        }
        for (path, old, new) in changes {
            let path = follow(&path, &moved, &dirs);
            let cur = blob_at(repo, &bt, &path)?;
            let heur = path.starts_with(HEURISTICS) && path.ends_with(".md");
            let conflict = || {
                Conflict(format!(
                    "{path} was changed here and on the remote, not by appending (commit {}); \
                     settle it with git (git pull --rebase) and run again",
                    c.id()
                ))
            };
            let result: Option<Vec<u8>> = match (old, new) {
                (None, None) => continue,
                (Some((oid, _)), None) => match &cur {
                    None => continue,
                    Some((id, _)) if *id == oid => None,
                    Some(_) => return Ok(Err(conflict())),
                },
                (None, Some((_, n))) => match &cur {
                    None => Some(if heur {
                        renumber(&n, ids, &mut out.renumbered)
                    } else {
                        n
                    }),
                    Some((_, b)) if *b == n => continue,
                    Some((_, b)) if heur => {
                        let h = header_len(&n);
                        if !b.starts_with(&n[..h]) {
                            return Ok(Err(conflict()));
                        }
                        let mut v = b.clone();
                        if !v.is_empty() && !v.ends_with(b"\n") {
                            v.push(b'\n');
                        }
                        v.extend(renumber(&n[h..], ids, &mut out.renumbered));
                        Some(v)
                    }
                    Some(_) => {
                        let taken =
                            |p: &str| added_names.contains(p) || bt.get_path(Path::new(p)).is_ok();
                        let to = free_name(&path, &taken);
                        added_names.insert(to.clone());
                        out.renames.push((path.clone(), to.clone(), last_key(&n)));
                        moved.insert(path.clone(), to.clone());
                        upd.upsert(&to, blob(repo, &n)?, FileMode::Blob);
                        touched = true;
                        continue;
                    }
                },
                (Some((oid, o)), Some((_, n))) => match &cur {
                    // The base has it already (a run killed while moving the files committed
                    // them as it found them).
                    Some((_, b)) if *b == n => continue,
                    Some((bid, b)) if *bid == oid => Some(match added(Some(&o), &n) {
                        Some(a) if heur => {
                            let mut v = b.clone();
                            v.extend(renumber(a, ids, &mut out.renumbered));
                            v
                        }
                        _ => n,
                    }),
                    Some((_, b)) => match added(Some(&o), &n) {
                        Some(a) => {
                            let mut v = b.clone();
                            if !v.is_empty() && !v.ends_with(b"\n") && !a.starts_with(b"\n") {
                                v.push(b'\n');
                            }
                            v.extend(if heur {
                                renumber(a, ids, &mut out.renumbered)
                            } else {
                                a.to_vec()
                            });
                            Some(v)
                        }
                        None => return Ok(Err(conflict())),
                    },
                    None => return Ok(Err(conflict())),
                },
            };
            match result {
                Some(bytes) => upd.upsert(&path, blob(repo, &bytes)?, FileMode::Blob),
                None => upd.remove(&path),
            };
            touched = true;
        }
        if !touched {
            continue; // nothing of this commit is new on the remote's head
        }
        let tree_id = upd
            .create_updated(repo, &bt)
            .map_err(|e| git_error("writing a tree", &e))?;
        if tree_id == bt.id() {
            continue;
        }
        let tree = repo
            .find_tree(tree_id)
            .map_err(|e| git_error("reading a tree", &e))?;
        let msg = String::from_utf8_lossy(c.message_raw_bytes()).into_owned();
        let id = repo
            .commit(None, &c.author(), &c.committer(), &msg, &tree, &[&base])
            .map_err(|e| git_error("writing a commit", &e))?;
        base = repo
            .find_commit(id)
            .map_err(|e| git_error("reading a commit", &e))?;
    }
    out.head = Some(base.id());
    Ok(Ok(out))
}

fn blob(repo: &Repository, bytes: &[u8]) -> Result<Oid, Error> {
    repo.blob(bytes)
        .map_err(|e| git_error("writing a blob", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_are_renumbered_and_their_keys_kept() {
        let ids = BTreeMap::from([(7, 12)]);
        let mut keys = BTreeMap::new();
        let got = renumber(
            b"<!-- elf:k1 -->\n## H-7: r\nbody ## H-7: no\n<!-- elf:k2 -->\n## H-8: s\n",
            &ids,
            &mut keys,
        );
        assert_eq!(
            String::from_utf8_lossy(&got),
            "<!-- elf:k1 -->\n## H-12: r\nbody ## H-7: no\n<!-- elf:k2 -->\n## H-8: s\n"
        );
        assert_eq!(keys, BTreeMap::from([("k1".to_string(), 12)]));
    }

    #[test]
    fn free_names_follow_the_unique_name_rule() {
        let taken = |p: &str| p == "a/x.md" || p == "a/x-2.md";
        assert_eq!(free_name("a/x.md", &taken), "a/x-3.md");
        assert_eq!(free_name("a.b/x", &|_| false), "a.b/x-2");
    }

    #[test]
    fn experiment_folders_and_their_files_follow_a_move() {
        assert_eq!(
            experiment_folder("experiments/active/20261205-010203_x/log.md"),
            Some("experiments/active/20261205-010203_x")
        );
        assert_eq!(experiment_folder("experiments/active/x"), None);
        assert_eq!(experiment_folder("memory/failures/x.md"), None);
        let dirs = BTreeMap::from([(
            "experiments/active/s_x".to_string(),
            "experiments/active/s_x-2".to_string(),
        )]);
        let moved = BTreeMap::new();
        assert_eq!(
            follow("experiments/active/s_x/log.md", &moved, &dirs),
            "experiments/active/s_x-2/log.md"
        );
        assert_eq!(
            follow("experiments/active/s_xy/log.md", &moved, &dirs),
            "experiments/active/s_xy/log.md"
        );
        let taken = |p: &str| p == "e/a" || p == "e/a-2";
        assert_eq!(free_folder("e/a", &taken), "e/a-3");
    }

    #[test]
    fn writes_into_a_moved_folder_follow_it_and_no_others() {
        let mut rec: Record = serde_json::from_str(
            r#"{"write":[{"path":"e/a_x/hypothesis.md"},{"path":"e/a_x/log.md"},{"path":"e/a_xy/log.md"}]}"#,
        )
        .expect("json");
        assert!(move_write_paths(&mut rec, "e/a_x", "e/a_x-2"));
        assert_eq!(
            Value::Object(rec).to_string(),
            r#"{"write":[{"path":"e/a_x-2/hypothesis.md"},{"path":"e/a_x-2/log.md"},{"path":"e/a_xy/log.md"}]}"#
        );
        let mut one: Record = serde_json::from_str(r#"{"write":{"path":"m/f.md"}}"#).expect("json");
        assert!(!move_write_paths(&mut one, "e/a_x", "e/a_x-2"));
        assert!(move_write_paths(&mut one, "m", "n"));
        assert_eq!(one["write"]["path"], "n/f.md");
    }

    #[test]
    fn header_ends_at_the_first_entry() {
        let t = b"# Heuristics: d\n\n---\n\n<!-- elf:k -->\n## H-1: r\n";
        assert_eq!(&t[..header_len(t)], b"# Heuristics: d\n\n---\n\n");
        assert_eq!(headings(t), vec![(1, "r".to_string())]);
    }
}
