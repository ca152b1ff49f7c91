//! Faults, driven through the wrapper scripts: a home on a file system that fills up mid-run, a
//! read-only home, a database file that is not a database, and git's `index.lock` held by a
//! live process. In every case a failing run exits with its documented status and one line
//! that says why and whether its record is journaled, nothing is corrupted, and nothing that
//! was journaled is lost: the next run completes it.
//!
//! The mounts need root (or CAP_SYS_ADMIN); without them those tests say they are skipped and
//! pass, but as root (CI) a mount that fails fails the test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::elf_home::{
    assert_db_ok, assert_git_ok, assert_started_once_and_clean, git, ok, rows, run, script,
    subjects,
};
use crate::util::{TempDir, cmd, one_line, skip_unless_root, watchdog};

/// A tmpfs mounted for one test, unmounted on drop (declare it after the TempDir holding it).
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` (such as "2m") at `at`, or says why the test is skipped.
    fn tmpfs(at: &Path, size: &str, test: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Mount(at.to_path_buf())),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr);
                let why = why.lines().next().unwrap_or_default();
                skip_unless_root(test, &format!("cannot mount a tmpfs: {why}"));
                None
            }
            Err(e) => {
                skip_unless_root(test, &format!("cannot run mount: {e}"));
                None
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn remount(&self, how: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&self.0)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "remount {how}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Fills the file system, leaving about `leave` bytes free (the filler is `filler`).
    fn fill(&self, leave: u64) {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => size += n as u64,
            }
        }
        // tmpfs gives the pages of a truncated file back at once.
        f.set_len(size.saturating_sub(leave))
            .expect("shrink filler");
    }

    /// Space returns.
    fn unfill(&self) {
        let _ = std::fs::remove_file(self.0.join("filler"));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Asserts that a script run exited with `code`, and returns its one failure line.
fn failed_with(out: &Output, code: i32, script_name: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    failure_line(out, script_name)
}

/// A failed run's one line: prefixed with the script's name, and no tool's raw message besides.
fn failure_line(out: &Output, script_name: &str) -> String {
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with(&format!("{script_name}: ")),
        "not the script's own line: {line}"
    );
    line
}

/// Records by the title or rule they were started with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Failure,
    Heuristic,
}

fn record(home: &Path, kind: Kind, name: &str) -> Command {
    match kind {
        Kind::Failure => {
            let mut c = script("record-failure.sh", home);
            c.args(["--title", name, "--domain", "faults"]);
            c
        }
        Kind::Heuristic => {
            let mut c = script("record-heuristic.sh", home);
            c.args(["--rule", name, "--domain", "faults", "--confidence", "0.5"]);
            c
        }
    }
}

fn script_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Failure => "record-failure",
        Kind::Heuristic => "record-heuristic",
    }
}

/// How much of a record is there: (rows, file entries, commits).
fn presence(home: &Path, kind: Kind, name: &str) -> (usize, usize, usize) {
    let subjects = subjects(home);
    match kind {
        Kind::Failure => {
            let files = std::fs::read_dir(home.join("memory/failures"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| {
                            std::fs::read_to_string(e.path())
                                .is_ok_and(|t| t.starts_with(&format!("# {name}\n")))
                        })
                        .count()
                })
                .unwrap_or(0);
            let frows = rows(
                home,
                &format!(
                    "SELECT filepath FROM learnings WHERE title = '{}'",
                    name.replace('\'', "''")
                ),
            );
            for r in &frows {
                let p = r["filepath"].as_str().unwrap_or_default();
                assert!(
                    home.join(p).is_file(),
                    "{name}: the row's file {p} is missing"
                );
            }
            (
                frows.len(),
                files,
                subjects
                    .iter()
                    .filter(|s| **s == format!("failure: {name}"))
                    .count(),
            )
        }
        Kind::Heuristic => {
            let text = std::fs::read_to_string(home.join("memory/heuristics/faults.md"))
                .unwrap_or_default();
            let hrows = rows(
                home,
                &format!(
                    "SELECT id FROM heuristics WHERE rule = '{}'",
                    name.replace('\'', "''")
                ),
            );
            for r in &hrows {
                let id = r["id"].as_i64().unwrap_or(0);
                assert!(
                    text.contains(&format!("\n## H-{id}: {name}\n")),
                    "{name}: no entry H-{id}"
                );
            }
            (
                hrows.len(),
                text.lines()
                    .filter(|l| l.starts_with("## H-") && l.ends_with(&format!(": {name}")))
                    .count(),
                subjects
                    .iter()
                    .filter(|s| **s == format!("heuristic: {name}"))
                    .count(),
            )
        }
    }
}

fn assert_whole(home: &Path, kind: Kind, name: &str) {
    assert_eq!(presence(home, kind, name), (1, 1, 1), "{name}: not whole");
}

fn assert_absent(home: &Path, kind: Kind, name: &str) {
    assert_eq!(presence(home, kind, name), (0, 0, 0), "{name}: not absent");
}

/// Every markdown file complete, and no temporary file left beside them.
fn assert_files_complete(home: &Path) {
    for sub in ["memory/failures", "memory/heuristics"] {
        let Ok(dir) = std::fs::read_dir(home.join(sub)) else {
            continue;
        };
        for e in dir.filter_map(|e| e.ok()) {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            assert!(
                name.ends_with(".md") && !name.starts_with('.'),
                "a stray file: {}",
                p.display()
            );
            let text = std::fs::read_to_string(&p).expect("read markdown");
            let complete = if sub.ends_with("failures") {
                text.starts_with("# ") && text.ends_with(" -->\n")
            } else {
                text.starts_with("# Heuristics: ") && text.ends_with("---\n\n")
            };
            assert!(complete, "{} is incomplete: {text:?}", p.display());
        }
    }
}

/// The journaled records: (kind, title or rule) -> finished.
fn journal(home: &Path) -> BTreeMap<(String, String), bool> {
    rows(home, "SELECT record, done_at FROM elf_journal")
        .iter()
        .filter_map(|r| {
            let rec: Value = serde_json::from_str(r["record"].as_str()?).ok()?;
            let name = match rec["kind"].as_str()? {
                "failure" => rec["db"]["values"]["title"].as_str()?,
                "heuristic" => rec["db"]["values"]["rule"].as_str()?,
                _ => return None,
            };
            Some((
                (rec["kind"].as_str()?.to_string(), name.to_string()),
                !r["done_at"].is_null(),
            ))
        })
        .collect()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Failure => "failure",
        Kind::Heuristic => "heuristic",
    }
}

/// The counts match, record by record: failure rows = files = commits, heuristic rows =
/// entries = commits.
fn assert_stores_agree(home: &Path) {
    let frows = rows(home, "SELECT COUNT(*) AS n FROM learnings")[0]["n"]
        .as_i64()
        .unwrap_or(-1) as usize;
    let files = std::fs::read_dir(home.join("memory/failures"))
        .expect("failures")
        .count();
    let hrows = rows(home, "SELECT COUNT(*) AS n FROM heuristics")[0]["n"]
        .as_i64()
        .unwrap_or(-1) as usize;
    let entries = std::fs::read_to_string(home.join("memory/heuristics/faults.md"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("## H-"))
        .count();
    let subjects = subjects(home);
    let fcommits = subjects
        .iter()
        .filter(|s| s.starts_with("failure: "))
        .count();
    let hcommits = subjects
        .iter()
        .filter(|s| s.starts_with("heuristic: "))
        .count();
    assert_eq!((frows, files), (fcommits, fcommits), "failures");
    assert_eq!((hrows, entries), (hcommits, hcommits), "heuristics");
    let out = run(script("sync-db-markdown.sh", home));
    assert_eq!(
        out.status.code(),
        Some(0),
        "sync-db-markdown.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process holding a lock file created the way git creates `index.lock` (O_CREAT|O_EXCL),
/// open until told to let go; then it removes the file, as git does when it is done.
struct GitLikeLock {
    child: Child,
}

impl GitLikeLock {
    fn hold(path: &Path) -> GitLikeLock {
        let mut child = Command::new("bash")
            .args([
                "-c",
                r#"set -C; exec 3>"$1" || exit 1; echo held; read -r _; rm -f "$1""#,
                "bash",
            ])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the lock holder");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("handshake");
        assert_eq!(
            line,
            "held\n",
            "the holder could not create {}",
            path.display()
        );
        GitLikeLock { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn release(mut self) {
        let _ = self.child.stdin.take().expect("stdin").write_all(b"go\n");
        let status = self.child.wait().expect("holder");
        assert!(status.success());
    }
}

impl Drop for GitLikeLock {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A flock(2) on a lock file, as elf-commit and elf-lock take them; released when the file is
/// closed, on drop.
struct Flock(#[allow(dead_code)] std::fs::File);

impl Flock {
    fn take(path: &Path) -> Flock {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .expect("lock file");
        // SAFETY: flock on a file descriptor this function owns.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        Flock(f)
    }
}

/// A run paused where it waits for `lock`, the file system filled under it, then let go: it
/// fails for want of space after its record was journaled.
fn full_mid_run(m: &Mount, home: &Path, kind: Kind, name: &str, lock: &Path) -> Output {
    let held = Flock::take(lock);
    let child = record(home, kind, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Journaled: the row is there once elf-db insert --journal has committed.
    let table = match kind {
        Kind::Failure => "learnings WHERE title",
        Kind::Heuristic => "heuristics WHERE rule",
    };
    crate::util::wait_for(Duration::from_secs(30), "the record's row", || {
        !rows(home, &format!("SELECT id FROM {table} = '{name}'")).is_empty()
    });
    // A heuristic's drain waits for the held drain lock, so the row is enough. A failure's
    // commit lock is taken by elf-commit only once its record has been written and its row
    // fixed: wait until elf-commit waits for the lock (blocked in flock(2), or sleeping
    // between tries of a lock it polls), so that the full disk meets the commit and nothing
    // before it.
    if kind == Kind::Failure {
        let pid = child.id();
        crate::util::wait_for(
            Duration::from_secs(30),
            "elf-commit to wait on its lock",
            || {
                super::descendants(pid).iter().any(|(p, comm)| {
                    comm == "elf-commit"
                        && std::fs::read_to_string(format!("/proc/{p}/wchan"))
                            .is_ok_and(|w| w.contains("nanosleep") || w.contains("lock_inode_wait"))
                })
            },
        );
    }
    m.fill(0);
    drop(held);
    watchdog(Duration::from_secs(60), move || {
        child.wait_with_output().expect("wait")
    })
}

#[test]
fn disk_full_mid_run_then_recovery() {
    let test = "faults::disk_full_mid_run_then_recovery";
    let dir = TempDir::new();
    let Some(m) = Mount::tmpfs(&dir.join("m"), "2m", test) else {
        return;
    };
    let home = m.path().join("home");
    ok(&run(record(&home, Kind::Failure, "before")));
    ok(&run(record(&home, Kind::Heuristic, "before")));

    // 1. A sweep: each run starts with a little less room, so that the disk fills at every
    // stage of the pipeline in turn (elf-db, elf-write, elf-commit, elf-db done, the log).
    let mut runs: Vec<(Kind, String, i32, String)> = Vec::new();
    let mut leaves: Vec<u64> = (0..=20).rev().map(|k| k * 8 * 1024).collect();
    leaves.extend([96 * 1024, 64 * 1024, 40 * 1024, 0]);
    for (i, leave) in leaves.into_iter().enumerate() {
        let kind = if i % 3 == 2 {
            Kind::Heuristic
        } else {
            Kind::Failure
        };
        let name = format!("sweep {i} at {} KiB", leave / 1024);
        m.fill(leave);
        let out = run(record(&home, kind, &name));
        m.unfill();
        let code = out.status.code().unwrap_or(-1);
        let line = match code {
            0 => String::new(),
            74 | 75 => failure_line(&out, script_name(kind)),
            _ => panic!(
                "{name}: status {code}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        if code == 0 {
            assert_whole(&home, kind, &name);
        }
        assert_files_complete(&home);
        assert_db_ok(&home);
        runs.push((kind, name, code, line));
    }

    // Space is back: the next run completes what the sweep left journaled.
    ok(&run(record(&home, Kind::Failure, "between")));
    let swept = journal(&home);
    assert!(swept.values().all(|done| *done), "still pending: {swept:?}");

    // 2. Mid-run, deterministically: a failure whose commit finds the disk full, and a
    // heuristic whose append finds it full; then a run on the full disk.
    let commit_lock = home.join(".git/claude-lock");
    let drain_lock = home.join(".git/elf-drain.lock");
    for (kind, name, lock) in [
        (Kind::Failure, "full at commit", &commit_lock),
        (Kind::Heuristic, "full at append", &drain_lock),
    ] {
        let out = full_mid_run(&m, &home, kind, name, lock);
        assert_eq!(
            out.status.code(),
            Some(74),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = failure_line(&out, script_name(kind));
        assert!(line.contains("is journaled"), "{name}: {line}");
        assert!(line.contains("No space left on device"), "{name}: {line}");
        let on_full = run(record(&home, Kind::Failure, &format!("{name}, then")));
        let then = failed_with(&on_full, 74, "record-failure");
        if kind == Kind::Heuristic {
            // The checker's repair stops rather than repair from half the data.
            let mut fix = script("sync-db-markdown.sh", &home);
            fix.arg("--fix");
            let out = run(fix);
            let line = failed_with(&out, 74, "sync-db-markdown");
            assert!(line.ends_with("; nothing was repaired"), "{line}");
        }
        m.unfill();
        assert_files_complete(&home);
        assert_db_ok(&home);
        runs.push((kind, name.to_string(), 74, line));
        runs.push((Kind::Failure, format!("{name}, then"), 74, then));
    }

    // 3. Space is back: one recovery run (the checker's repair this time) completes every
    // journaled record; what was never journaled is absent, and the messages said which was
    // which.
    let before = journal(&home);
    let unfinished: Vec<_> = before.iter().filter(|(_, done)| !**done).collect();
    assert!(
        before.contains_key(&("failure".into(), "full at commit".into()))
            && before.contains_key(&("heuristic".into(), "full at append".into())),
        "the mid-run records are journaled: {before:?}"
    );
    let mut fix = script("sync-db-markdown.sh", &home);
    fix.arg("--fix");
    ok(&run(fix));
    let after = journal(&home);
    assert!(after.values().all(|done| *done), "still pending: {after:?}");
    for (kind, name, code, line) in &runs {
        let journaled = after.contains_key(&(kind_name(*kind).to_string(), name.clone()));
        if *code == 0 || journaled {
            assert_whole(&home, *kind, name);
        } else {
            assert_absent(&home, *kind, name);
        }
        // The line told the truth about the record (a line that could not tell says so).
        if line.contains("is journaled") {
            assert!(journaled, "{name}: not journaled, but: {line}");
        }
        if line.contains("nothing was recorded") {
            assert!(!journaled, "{name}: journaled, but: {line}");
        }
    }
    assert_files_complete(&home);
    assert_db_ok(&home);
    assert_git_ok(&home);
    assert_stores_agree(&home);
    let failed = runs.iter().filter(|r| r.2 != 0).count();
    eprintln!(
        "{test}: {} runs, {failed} failed (74/75, one line each), {} journaled records unfinished before the recovery run, all whole after it",
        runs.len(),
        unfinished.len()
    );
}

/// Every file below `dir` with its bytes (lock files' holder records excepted).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .expect("read_dir")
            .filter_map(|e| e.ok())
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_none_or(|x| x != "lock") {
                all.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    all
}

#[test]
fn read_only_home() {
    let test = "faults::read_only_home";
    let dir = TempDir::new();
    let Some(m) = Mount::tmpfs(&dir.join("m"), "8m", test) else {
        return;
    };
    let home = m.path().join("home");
    ok(&run(record(&home, Kind::Failure, "kept")));
    ok(&run(record(&home, Kind::Heuristic, "kept")));
    // One record journaled but unfinished (its commit gave up on a held index.lock).
    let holder = GitLikeLock::hold(&home.join(".git/index.lock"));
    let mut c = record(&home, Kind::Failure, "unfinished");
    c.env("ELF_LOCK_TIMEOUT", "0.3");
    let out = run(c);
    assert_eq!(out.status.code(), Some(75));
    holder.release();
    let before = snapshot(&home);

    m.remount("ro");
    for (name, args) in [
        (
            "record-failure",
            &["--title", "refused", "--domain", "faults"][..],
        ),
        (
            "record-heuristic",
            &["--rule", "refused", "--domain", "faults"],
        ),
        (
            "start-experiment",
            &["--name", "refused", "--hypothesis", "h"],
        ),
        ("sync-db-markdown", &["--fix"]),
    ] {
        let mut c = script(&format!("{name}.sh"), &home);
        c.args(args);
        let out = run(c);
        assert_eq!(
            out.status.code(),
            Some(74),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            failure_line(&out, name),
            format!(
                "{name}: cannot write in the ELF home {}: Read-only file system; nothing was changed",
                home.display()
            )
        );
        assert!(out.stdout.is_empty(), "{name} printed {:?}", out.stdout);
    }
    // Reading still works: query.sh and the checker never write.
    let mut q = script("query.sh", &home);
    q.args(["--recent", "10"]);
    let out = run(q);
    ok(&out);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("kept") && listed.contains("unfinished"),
        "{listed}"
    );
    ok(&run(script("sync-db-markdown.sh", &home)));
    assert_db_ok(&home);
    m.remount("rw");
    assert_eq!(snapshot(&home), before, "a read-only home changed");

    // Writable again: the next run completes the journaled record; nothing was lost.
    ok(&run(record(&home, Kind::Failure, "after")));
    for (kind, name) in [
        (Kind::Failure, "kept"),
        (Kind::Heuristic, "kept"),
        (Kind::Failure, "unfinished"),
        (Kind::Failure, "after"),
    ] {
        assert_whole(&home, kind, name);
    }
    assert_absent(&home, Kind::Failure, "refused");
    assert!(journal(&home).values().all(|done| *done));
    assert_files_complete(&home);
    assert_git_ok(&home);
    assert_stores_agree(&home);
}

#[test]
fn a_database_file_that_is_not_a_database() {
    for replaced in [false, true] {
        let dir = TempDir::new();
        let home = dir.join("home");
        ok(&run(record(&home, Kind::Failure, "kept")));
        ok(&run(record(&home, Kind::Heuristic, "kept")));
        let db = home.join("memory/index.db");
        let garbage: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for side in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{side}", db.display()));
        }
        if replaced {
            // A new file (a new inode): the wrappers would prepare its schema again.
            let tmp = home.join("memory/garbage.tmp");
            std::fs::write(&tmp, &garbage).expect("garbage");
            std::fs::rename(&tmp, &db).expect("replace");
        } else {
            std::fs::write(&db, &garbage).expect("garbage");
        }
        let head = git(&home, &["rev-parse", "HEAD"]);
        let work: BTreeMap<_, _> = snapshot(&home)
            .into_iter()
            .filter(|(p, _)| !p.starts_with(home.join(".git")))
            .collect();

        let db_text = db.display().to_string();
        // The schema is completed by the journaling itself, so a replaced file and an
        // overwritten one fail at the same step, in the same words.
        let writer = |name: &str, what: &str| {
            format!(
                "{name}: {what} failed: elf-db: opening {db_text}: file is not a database; nothing was recorded"
            )
        };
        let reader = |name: &str| {
            format!(
                "{name}: cannot read the ELF database {db_text}: elf-db: file is not a database"
            )
        };
        for (name, args, expected) in [
            (
                "record-failure",
                &["--title", "refused", "--domain", "faults"][..],
                writer("record-failure", "recording the failure"),
            ),
            (
                "record-heuristic",
                &["--rule", "refused", "--domain", "faults"],
                writer("record-heuristic", "recording the heuristic"),
            ),
            (
                "start-experiment",
                &["--name", "refused", "--hypothesis", "h"],
                writer("start-experiment", "starting the experiment"),
            ),
            ("query", &["--context"], reader("query")),
            ("sync-db-markdown", &[], reader("sync-db-markdown")),
            ("sync-db-markdown", &["--fix"], reader("sync-db-markdown")),
        ] {
            let mut c = script(&format!("{name}.sh"), &home);
            c.args(args);
            let out = run(c);
            assert_eq!(
                out.status.code(),
                Some(74),
                "{name} {args:?} (replaced {replaced}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(failure_line(&out, name), expected);
            assert!(out.stdout.is_empty(), "{name} printed {:?}", out.stdout);
        }
        assert_eq!(std::fs::read(&db).expect("db"), garbage, "the file changed");
        let now: BTreeMap<_, _> = snapshot(&home)
            .into_iter()
            .filter(|(p, _)| !p.starts_with(home.join(".git")))
            .collect();
        assert_eq!(now, work, "files were written (replaced {replaced})");
        assert_eq!(
            git(&home, &["rev-parse", "HEAD"]),
            head,
            "a commit was made"
        );
        assert_eq!(git(&home, &["status", "--porcelain"]), "");
    }
}

#[test]
fn index_lock_held_by_a_live_process() {
    let dir = TempDir::new();
    let home = dir.join("home");
    ok(&run(record(&home, Kind::Failure, "first")));
    let lock = home.join(".git/index.lock");
    let holder = GitLikeLock::hold(&lock);

    let wait = Duration::from_millis(1500);
    let mut c = record(&home, Kind::Failure, "while locked");
    c.env("ELF_LOCK_TIMEOUT", format!("{}", wait.as_secs_f64()));
    let t = Instant::now();
    let out = run(c);
    let took = t.elapsed();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took >= wait,
        "gave up after {took:?}, before the {wait:?} wait"
    );
    let line = failure_line(&out, "record-failure");
    assert!(line.contains(&lock.display().to_string()), "{line}");
    assert!(
        line.contains(&format!("pid {}", holder.pid())),
        "the holder is named: {line}"
    );
    assert!(line.contains("is journaled"), "{line}");
    assert_eq!(
        journal(&home).get(&("failure".into(), "while locked".into())),
        Some(&false),
        "journaled, not finished"
    );
    assert!(lock.exists(), "the live process's lock was removed");
    assert_eq!(presence(&home, Kind::Failure, "while locked").2, 0);

    // The lock goes away; the next run completes the record: one commit.
    holder.release();
    ok(&run(record(&home, Kind::Failure, "next")));
    assert_whole(&home, Kind::Failure, "while locked");
    assert_whole(&home, Kind::Failure, "next");
    assert!(journal(&home).values().all(|done| *done));
    assert_eq!(git(&home, &["status", "--porcelain"]), "");
    assert_git_ok(&home);
    assert_stores_agree(&home);
}

#[test]
fn diagnostics_of_concurrent_stages_are_whole_lines() {
    // The stages of a pipeline share one stderr; each diagnostic must reach it in one piece,
    // or the wrappers' one-line summaries (and a reader) get spliced lines.
    let dir = TempDir::new();
    let db = dir.join("index.db");
    std::fs::write(&db, vec![0x5a_u8; 4096]).expect("garbage");
    let log = dir.join("stderr");
    let shared = std::fs::File::create(&log).expect("stderr file");
    let expected = format!("elf-db: opening {}: file is not a database", db.display());
    for _round in 0..4 {
        let children: Vec<Child> = (0..24)
            .map(|_| {
                cmd(env!("CARGO_BIN_EXE_elf-db"))
                    .args(["insert", "--db"])
                    .arg(&db)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(shared.try_clone().expect("dup"))
                    .spawn()
                    .expect("spawn elf-db")
            })
            .collect();
        for mut c in children {
            assert_eq!(c.wait().expect("wait").code(), Some(74));
        }
    }
    let text = std::fs::read_to_string(&log).expect("stderr");
    assert_eq!(text.lines().count(), 4 * 24);
    for line in text.lines() {
        assert_eq!(line, expected, "a spliced diagnostic");
    }
}

#[test]
fn index_lock_held_on_the_first_run_of_a_home() {
    // An empty repository becomes a home; its first run meets a held index.lock: the record is
    // journaled, the new .gitignore waits to be committed, and the run says so in one line.
    let dir = TempDir::new();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    git(&home, &["init", "-q"]);
    let holder = GitLikeLock::hold(&home.join(".git/index.lock"));
    let mut c = record(&home, Kind::Failure, "first, locked");
    c.env("ELF_LOCK_TIMEOUT", "0.5");
    let out = run(c);
    let line = failed_with(&out, 75, "record-failure");
    assert!(line.contains("is journaled"), "{line}");
    holder.release();

    // The next run commits both, and has nothing to warn about.
    let out = run(record(&home, Kind::Failure, "second"));
    ok(&out);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_whole(&home, Kind::Failure, "first, locked");
    assert_whole(&home, Kind::Failure, "second");
    assert_started_once_and_clean(&home);
}

#[test]
fn first_runs_wait_for_a_slow_git_init() {
    // git init makes .git at once and fills it in for a while (long on a slow disk): a run
    // that starts meanwhile must wait for the repository, not take the bare folder for one.
    let dir = TempDir::new();
    let home = dir.join("home");
    let shim = dir.join("shim");
    std::fs::create_dir_all(&shim).expect("shim dir");
    let real = Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .expect("git");
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    std::fs::write(
        shim.join("git"),
        format!(
            "#!/bin/sh\nif [ \"$1\" = init ]; then\n    for last; do :; done\n    mkdir -p \"$last/.git\"\n    sleep 1\nfi\nexec {real} \"$@\"\n"
        ),
    )
    .expect("shim");
    std::fs::set_permissions(
        shim.join("git"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let path = format!(
        "{}:{}:{}",
        shim.display(),
        crate::elf_home::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let spawn = |name: &str| {
        let mut c = record(&home, Kind::Failure, name);
        c.env("PATH", &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let a = spawn("first");
    crate::util::wait_for(Duration::from_secs(30), "git init to start", || {
        home.join(".git").is_dir()
    });
    let b = spawn("second");
    for (name, child) in [("first", a), ("second", b)] {
        let out = watchdog(Duration::from_secs(60), move || {
            child.wait_with_output().expect("wait")
        });
        ok(&out);
        assert!(
            out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_whole(&home, Kind::Failure, "first");
    assert_whole(&home, Kind::Failure, "second");
    assert_started_once_and_clean(&home);
}
