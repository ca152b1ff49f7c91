//! The scripts under a hostile user: each test is a family of inputs or home states that once
//! broke them (two names of one slug, a lost index, duplicated and forged entries, records
//! whose files are not committed, special files, timeouts, big input), tried with several
//! members, and the invariant that must hold for all of them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::elf_home::{git, ok, rows, run, script};
use crate::util::{TempDir, watchdog};

/// `sync-db-markdown.sh [ARGS]`: its status and its report.
fn sync(home: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut c = script("sync-db-markdown.sh", home);
    c.args(args);
    let out = run(c);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs sync --fix, then asserts that sync finds the home in sync and git has nothing left.
fn fix_converges(home: &Path) {
    let (code, out, err) = sync(home, &["--fix"]);
    assert_eq!(code, Some(0), "--fix: {out}{err}");
    let (code, out, err) = sync(home, &[]);
    assert_eq!(code, Some(0), "after --fix: {out}{err}");
    assert_eq!(git(home, &["status", "--porcelain"]), "");
}

fn heuristic(home: &Path, domain: &str, rule: &str, explanation: &str) -> i64 {
    let mut c = script("record-heuristic.sh", home);
    c.args([
        "--domain",
        domain,
        "--rule",
        rule,
        "--explanation",
        explanation,
        "--confidence",
        "0.5",
    ]);
    let out = run(c);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ID: H-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no id in {text}"))
}

/// The "## H-<id>: rule" headings of a heuristics file.
fn headings(home: &Path, domain: &str) -> Vec<String> {
    std::fs::read_to_string(home.join(format!("memory/heuristics/{domain}.md")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("## "))
        .map(String::from)
        .collect()
}

fn sqlite(home: &Path, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(home.join("memory/index.db"))
        .arg(sql)
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn names_of_one_slug_get_folders_of_their_own() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let names = [
        "Retry v1",
        "Retry v.1",
        "retry V1",
        "RETRY-V1",
        "Retry  v1!",
    ];
    // All at once, so that most of them fall in the same second.
    let threads: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut c = script("start-experiment.sh", &home);
            c.args([
                "--name",
                name,
                "--hypothesis",
                &format!("hypothesis {i}"),
                "--success-criteria",
                "s",
                "--failure-criteria",
                "f",
            ]);
            std::thread::spawn(move || run(c))
        })
        .collect();
    for t in threads {
        ok(&t.join().expect("thread"));
    }
    let r = rows(
        &home,
        "SELECT name, folder_path FROM experiments ORDER BY id",
    );
    assert_eq!(r.len(), names.len());
    let mut folders: Vec<&str> = r
        .iter()
        .map(|row| row["folder_path"].as_str().unwrap_or_default())
        .collect();
    for row in &r {
        let name = row["name"].as_str().unwrap_or_default();
        let i = names
            .iter()
            .position(|n| n.split_whitespace().collect::<Vec<_>>().join(" ") == name)
            .expect("a name given");
        let folder = home.join(row["folder_path"].as_str().unwrap_or_default());
        let hyp = std::fs::read_to_string(folder.join("hypothesis.md")).expect("hypothesis.md");
        assert!(
            hyp.starts_with(&format!("# Experiment: {name}\n")),
            "{name}: {hyp}"
        );
        assert!(hyp.contains(&format!("\nhypothesis {i}\n")), "{hyp}");
    }
    folders.sort();
    folders.dedup();
    assert_eq!(folders.len(), names.len(), "{r:?}");
    let on_disk = std::fs::read_dir(home.join("experiments/active"))
        .expect("active")
        .count();
    assert_eq!(on_disk, names.len(), "one folder per experiment, no orphan");
    assert_eq!(git(&home, &["status", "--porcelain"]), "");
    assert_eq!(
        rows(
            &home,
            "SELECT count(*) AS n FROM elf_journal WHERE done_at IS NULL"
        )[0]["n"],
        Value::from(0)
    );
}

#[test]
fn a_lost_index_never_gives_an_id_twice() {
    for rebuild_first in [false, true] {
        let dir = TempDir::new();
        let home = dir.join("home");
        let mut before = Vec::new();
        for (domain, rule) in [
            ("ops", "first rule"),
            ("ops", "second rule"),
            ("db", "third"),
        ] {
            before.push((heuristic(&home, domain, rule, "why"), rule));
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(home.join(format!("memory/index.db{suffix}")));
        }
        if rebuild_first {
            fix_converges(&home);
        }
        let new = heuristic(&home, "ops", "after the reset", "why");
        let highest = before.iter().map(|(id, _)| *id).max().unwrap_or(0);
        assert!(
            new > highest,
            "id {new} given again (markdown up to H-{highest})"
        );
        fix_converges(&home);
        // Every entry kept its id, and its row is its own.
        for (id, rule) in before.iter().chain([(new, "after the reset")].iter()) {
            let r = rows(
                &home,
                &format!("SELECT rule FROM heuristics WHERE id = {id}"),
            );
            assert_eq!(r.len(), 1, "H-{id}");
            assert_eq!(r[0]["rule"], Value::from(*rule), "H-{id}");
        }
        assert_eq!(rows(&home, "SELECT id FROM heuristics").len(), 4);
        let ops = headings(&home, "ops");
        assert_eq!(ops.len(), 3, "{ops:?}");
    }
}

#[test]
fn an_entry_is_paired_with_a_row_by_its_rule_too() {
    // Ids that restarted (an index rebuilt elsewhere): H-1 in the markdown is not row 1.
    let dir = TempDir::new();
    let home = dir.join("home");
    let id = heuristic(&home, "ops", "the real rule", "why");
    sqlite(
        &home,
        &format!("UPDATE heuristics SET rule = 'another rule' WHERE id = {id}"),
    );
    let (code, out, _) = sync(&home, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("heuristic entry without row"), "{out}");
    assert!(out.contains("heuristic row without entry"), "{out}");
    fix_converges(&home);
    let r = rows(&home, "SELECT rule FROM heuristics ORDER BY id");
    let rules: Vec<&str> = r.iter().filter_map(|x| x["rule"].as_str()).collect();
    assert_eq!(rules, ["another rule", "the real rule"]);
}

#[test]
fn copies_of_an_entry_are_duplicates_not_learnings() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let a = heuristic(&home, "ops", "keep pipes short", "one\ntwo");
    heuristic(&home, "ops", "another", "x");
    let file = home.join("memory/heuristics/ops.md");
    let text = std::fs::read_to_string(&file).expect("read");
    let start = text.find(&format!("## H-{a}:")).expect("entry");
    let len = text[start..].find("---\n\n").expect("end") + 5;
    let entry = text[start..start + len].to_string();
    // A paste at the end, another in the middle, and one into another domain's file.
    let pasted = format!("{text}{entry}");
    let pasted = pasted.replacen("## H-", &format!("{entry}## H-"), 1);
    std::fs::write(&file, pasted).expect("write");
    std::fs::write(
        home.join("memory/heuristics/db.md"),
        format!("# Heuristics: db\n\n{entry}"),
    )
    .expect("write");
    git(&home, &["add", "-A"]);
    git(&home, &["commit", "-qm", "pasted"]);
    let (code, out, _) = sync(&home, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.matches("duplicate heuristic entry").count(), 3, "{out}");
    assert!(!out.contains("without row"), "{out}");
    fix_converges(&home);
    assert_eq!(rows(&home, "SELECT id FROM heuristics").len(), 2);
    let ops = headings(&home, "ops");
    assert_eq!(
        ops.iter()
            .filter(|h| h.starts_with(&format!("## H-{a}:")))
            .count(),
        1,
        "{ops:?}"
    );
    assert!(headings(&home, "db").is_empty());
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        text.contains("one\ntwo\n"),
        "the original stays whole: {text}"
    );
}

#[test]
fn text_never_forges_structure() {
    let dir = TempDir::new();
    let home = dir.join("home");
    // Through the scripts: headings in an explanation, a summary and a hypothesis.
    let forged = "## H-99: forged\n# Title\n   ### deep\n## Root Cause\nplain";
    let id = heuristic(&home, "ops", "honest rule", forged);
    let mut f = script("record-failure.sh", &home);
    f.args([
        "--title",
        "forged summary",
        "--domain",
        "d",
        "--summary",
        forged,
    ]);
    ok(&run(f));
    assert_eq!(headings(&home, "ops"), [format!("## H-{id}: honest rule")]);
    let (code, out, err) = sync(&home, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The index keeps the text as given.
    assert_eq!(
        rows(
            &home,
            &format!("SELECT explanation FROM heuristics WHERE id = {id}")
        )[0]["explanation"],
        Value::from(forged)
    );
    // Legacy rows holding line breaks, escapes and headings: repaired as one-line headings.
    sqlite(
        &home,
        "INSERT INTO heuristics (domain, rule, explanation, confidence) VALUES
           ('ops', 'split' || char(10) || '## H-98: forged', 'x' || char(10) || '## H-97: y', 0.5),
           ('ops', char(27) || '[31mred' || char(13) || char(10) || 'text', '', 0.5);
         INSERT INTO learnings (type, filepath, title, summary, domain, severity)
           VALUES ('failure', 'memory/failures/20250101_forged.md',
                   'two' || char(10) || '# lines', '## What Happened', 'd' || char(10) || 'x', 3);",
    );
    let (code, out, _) = sync(&home, &[]);
    assert_eq!(code, Some(1));
    // One line per difference: three rows without their markdown.
    assert_eq!(out.lines().count(), 3, "{out}");
    fix_converges(&home);
    let ops = headings(&home, "ops");
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert!(ops.iter().all(|h| h.starts_with("## H-")), "{ops:?}");
    assert!(
        ops.iter().any(|h| h.ends_with(": split ## H-98: forged")),
        "{ops:?}"
    );
    assert!(ops.iter().any(|h| h.ends_with(": red text")), "{ops:?}");
    let file = std::fs::read_to_string(home.join("memory/failures/20250101_forged.md"))
        .expect("repaired failure");
    assert!(
        file.starts_with("# two # lines\n\n**Domain**: d x\n"),
        "{file}"
    );
    assert!(file.contains("\n\\## What Happened\n"), "{file}");
    // And query.sh prints each item on one line.
    let mut q = script("query.sh", &home);
    q.args(["--domain", "ops"]);
    let out = run(q);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let items: Vec<&str> = text.lines().filter(|l| l.starts_with("- [H-")).collect();
    assert_eq!(items.len(), 3, "{text}");
    assert!(!text.contains('\x1b'), "{text}");
}

#[test]
fn rows_sharing_a_file_each_get_their_own() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let mut f = script("record-failure.sh", &home);
    f.args(["--title", "same day", "--domain", "d"]);
    ok(&run(f));
    let path = rows(&home, "SELECT filepath FROM learnings")[0]["filepath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The legacy bug: a second row, an older one, pointing at the first one's file.
    sqlite(
        &home,
        &format!(
            "INSERT INTO learnings (type, filepath, title, domain, severity)
             VALUES ('failure', '{path}', 'an older one', 'd', 2)"
        ),
    );
    let (code, out, _) = sync(&home, &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("failure rows sharing one file"), "{out}");
    fix_converges(&home);
    let r = rows(&home, "SELECT title, filepath FROM learnings ORDER BY id");
    assert_eq!(r[0]["filepath"], Value::from(path.clone()));
    let other = r[1]["filepath"].as_str().unwrap_or_default();
    assert_eq!(other, path.replace(".md", "-2.md"));
    let text = std::fs::read_to_string(home.join(other)).expect("its own file");
    assert!(text.starts_with("# an older one\n"), "{text}");
    let first = std::fs::read_to_string(home.join(&path)).expect("file");
    assert!(first.starts_with("# same day\n"), "{first}");
}

#[test]
fn files_that_are_not_committed_are_found_and_committed() {
    let dir = TempDir::new();
    let home = dir.join("home");
    heuristic(&home, "ops", "committed rule", "x");
    let mut f = script("record-failure.sh", &home);
    f.args(["--title", "kept", "--domain", "d"]);
    ok(&run(f));
    let path = rows(&home, "SELECT filepath FROM learnings")[0]["filepath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Three members: a file taken out of the last commit, a changed file, a staged change.
    git(&home, &["rm", "-q", "--cached", &path]);
    git(&home, &["commit", "-qm", "lose it"]);
    let heur = home.join("memory/heuristics/ops.md");
    let mut text = std::fs::read_to_string(&heur).expect("read");
    text.push_str("a note of the user's\n");
    std::fs::write(&heur, &text).expect("write");
    let (code, out, _) = sync(&home, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("not committed (untracked): {path}")),
        "{out}"
    );
    assert!(
        out.contains("not committed (changed): memory/heuristics/ops.md"),
        "{out}"
    );
    fix_converges(&home);
    assert!(
        git(&home, &["show", "HEAD:memory/heuristics/ops.md"]).ends_with("a note of the user's\n")
    );
}

#[test]
fn special_files_are_reported_and_left_alone() {
    let dir = TempDir::new();
    let home = dir.join("home");
    heuristic(&home, "ops", "a rule", "x");
    let outside = dir.join("secret.md");
    std::fs::write(
        &outside,
        "# Secret\n\n## H-500: stolen\n\n**Domain**: x\n\n## Summary\n\nsecret text\n",
    )
    .expect("write");
    let fifo = |p: &Path| {
        assert!(
            Command::new("mkfifo")
                .arg(p)
                .status()
                .expect("mkfifo")
                .success()
        );
    };
    let failures = home.join("memory/failures");
    let heuristics = home.join("memory/heuristics");
    fifo(&failures.join("pipe.md"));
    fifo(&heuristics.join("pipe.md"));
    std::os::unix::fs::symlink(&outside, failures.join("link.md")).expect("symlink");
    std::os::unix::fs::symlink(&outside, heuristics.join("link.md")).expect("symlink");
    std::os::unix::fs::symlink("/dev/zero", heuristics.join("zero.md")).expect("symlink");
    std::fs::create_dir(failures.join("folder.md")).expect("mkdir");
    let socket = std::os::unix::net::UnixListener::bind(heuristics.join("sock.md"));
    assert!(socket.is_ok());
    let h = home.clone();
    let (code, out, _) = watchdog(Duration::from_secs(60), move || sync(&h, &[]));
    assert_eq!(code, Some(1));
    for name in [
        "failures/pipe.md",
        "heuristics/pipe.md",
        "failures/link.md",
        "heuristics/link.md",
        "heuristics/zero.md",
        "failures/folder.md",
        "heuristics/sock.md",
    ] {
        assert!(
            out.contains(&format!("not a regular file, left alone: memory/{name}")),
            "{name}: {out}"
        );
    }
    let h = home.clone();
    let (code, out, _) = watchdog(Duration::from_secs(60), move || sync(&h, &["--fix"]));
    assert_eq!(code, Some(1), "the special files remain: {out}");
    assert!(rows(&home, "SELECT id FROM heuristics WHERE id = 500").is_empty());
    assert!(rows(&home, "SELECT id FROM learnings WHERE title = 'Secret'").is_empty());
    let tracked = git(&home, &["ls-files"]);
    assert!(
        !tracked.contains("link.md") && !tracked.contains("pipe.md"),
        "{tracked}"
    );
    drop(socket);
    // A record meanwhile is not blocked by them.
    let mut c = script("record-heuristic.sh", &home);
    c.args(["--domain", "ops", "--rule", "still recording"]);
    let out = watchdog(Duration::from_secs(60), move || run(c));
    ok(&out);
}

/// `git init` with more arguments, in `dir`.
fn git_init(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .arg("init")
        .arg("-q")
        .args(args)
        .arg(dir)
        .status()
        .expect("git init");
    assert!(st.success());
}

#[test]
fn repositories_elf_commit_cannot_use_are_refused_before_journaling() {
    let dir = TempDir::new();
    for (name, args) in [
        ("sha256", &["--object-format=sha256"][..]),
        ("reftable", &["--ref-format=reftable"]),
    ] {
        let home = dir.join(name);
        git_init(&home, args);
        if git(&home, &["rev-parse", "--show-object-format"]).trim() == "sha1" && name == "sha256" {
            continue;
        }
        let mut c = script("record-heuristic.sh", &home);
        c.args(["--domain", "ops", "--rule", "never journaled"]);
        let out = run(c);
        let err = String::from_utf8_lossy(&out.stderr);
        if name == "reftable" && out.status.code() == Some(0) {
            // A git too old to make reftable repositories made an ordinary one.
            continue;
        }
        assert_eq!(out.status.code(), Some(69), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("unsupported"), "{err}");
        assert!(err.contains("nothing was recorded"), "{err}");
        assert!(!home.join("memory/index.db").exists(), "{name}: journaled");
    }
}

#[test]
fn split_index_homes_record_and_stay_in_sync() {
    let dir = TempDir::new();
    let home = dir.join("home");
    git_init(&home, &[]);
    git(&home, &["config", "core.splitIndex", "true"]);
    for rule in ["one", "two", "three"] {
        heuristic(&home, "ops", rule, "x");
    }
    assert_eq!(git(&home, &["status", "--porcelain"]), "");
    let (code, out, err) = sync(&home, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn homes_whose_git_is_elsewhere_or_outside() {
    let dir = TempDir::new();
    // A linked worktree, and a repository whose git folder is elsewhere (as a submodule's).
    let main = dir.join("main");
    git_init(&main, &[]);
    git(&main, &["commit", "-q", "--allow-empty", "-m", "init"]);
    let worktree = dir.join("worktree");
    git(
        &main,
        &["worktree", "add", "-q", &worktree.display().to_string()],
    );
    let separate = dir.join("separate");
    let gitdir = dir.join("separate.git");
    git_init(
        &separate,
        &["--separate-git-dir", &gitdir.display().to_string()],
    );
    for home in [&worktree, &separate] {
        let id = heuristic(home, "ops", "from a .git file", "x");
        assert!(id > 0);
        assert_eq!(git(home, &["status", "--porcelain"]), "", "{home:?}");
        assert_eq!(
            git(home, &["log", "-1", "--format=%s"]).trim(),
            "heuristic: from a .git file"
        );
        assert!(home.join(".git").is_file());
        let (code, out, err) = sync(home, &[]);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    // A home inside another repository's work tree: a repository of its own, said once.
    let outer = dir.join("outer");
    git_init(&outer, &[]);
    let home = outer.join("deep/elf");
    let mut c = script("record-failure.sh", &home);
    c.args(["--title", "nested", "--domain", "d"]);
    let out = run(c);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inside the git work tree of"), "{err}");
    assert!(home.join(".git").is_dir());
    assert_eq!(git(&outer, &["log", "--all", "--oneline"]), "");
    let mut c = script("record-failure.sh", &home);
    c.args(["--title", "nested again", "--domain", "d"]);
    let out = run(c);
    ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn one_timeout_governs_every_wait_and_names_what_was_busy() {
    let dir = TempDir::new();
    let home = dir.join("home");
    heuristic(&home, "ops", "first", "x");
    // The database held by another program past ELF_LOCK_TIMEOUT.
    let mut holder = Command::new("sqlite3")
        .arg(home.join("memory/index.db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3");
    {
        use std::io::{BufRead, BufReader, Write};
        let mut stdin = holder.stdin.take().expect("stdin");
        writeln!(stdin, "BEGIN IMMEDIATE; SELECT 'held';").expect("write");
        let mut line = String::new();
        BufReader::new(holder.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "held");
        for (script_name, args) in [
            ("record-failure.sh", &["--title", "t", "--domain", "d"][..]),
            ("record-heuristic.sh", &["--domain", "d", "--rule", "r"]),
            (
                "start-experiment.sh",
                &[
                    "--name",
                    "n",
                    "--hypothesis",
                    "h",
                    "--success-criteria",
                    "s",
                    "--failure-criteria",
                    "f",
                ],
            ),
        ] {
            let mut c = script(script_name, &home);
            c.env("ELF_LOCK_TIMEOUT", "1.5").args(args);
            let out = run(c);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(75), "{script_name}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.contains("stayed busy for 1.5s (ELF_LOCK_TIMEOUT)"),
                "{script_name}: {err}"
            );
            assert!(!err.contains("--busy-timeout"), "{err}");
        }
        // A wait longer than the tools' own default of 10 s is waited out.
        let mut c = script("record-heuristic.sh", &home);
        c.env("ELF_LOCK_TIMEOUT", "60")
            .args(["--domain", "d", "--rule", "waited"]);
        let waiter = std::thread::spawn(move || run(c));
        std::thread::sleep(Duration::from_secs(12));
        writeln!(stdin, "COMMIT;").expect("write");
        drop(stdin);
        ok(&waiter.join().expect("thread"));
    }
    let _ = holder.wait();
    // A held drain lock and commit lock: named, with the wait.
    for lock in ["elf-drain.lock", "claude-lock"] {
        let path = home.join(".git").join(lock);
        let mut hold = crate::util::cmd(env!("CARGO_BIN_EXE_elf-lock"))
            .arg(&path)
            .args(["--", "sleep", "30"])
            .spawn()
            .expect("elf-lock");
        crate::util::wait_for(Duration::from_secs(10), "the lock held", || {
            Command::new(env!("CARGO_BIN_EXE_elf-lock"))
                .args(["-n"])
                .arg(&path)
                .arg("true")
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.code() == Some(75))
                .unwrap_or(false)
        });
        let mut c = script("record-heuristic.sh", &home);
        c.env("ELF_LOCK_TIMEOUT", "1")
            .args(["--domain", "d", "--rule", lock]);
        let out = run(c);
        let _ = hold.kill();
        let _ = hold.wait();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{lock}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(lock), "{err}");
        assert!(err.contains("1s (ELF_LOCK_TIMEOUT)"), "{err}");
        assert!(!err.contains("--timeout"), "{err}");
    }
}

#[test]
fn big_answers_are_recorded_or_refused_at_once() {
    let dir = TempDir::new();
    let home = dir.join("home");
    heuristic(&home, "ops", "first", "x");
    let line = "word ü word ü word\n";
    // Members: many short lines, one long line, a flag near the kernel's limit, and floods.
    let fits = line.repeat(120_000 / line.len());
    let long = "y".repeat(120_000);
    for (i, summary) in [fits.trim_end(), long.as_str()].iter().enumerate() {
        let input = format!("Big {i}\nd\n3\ntags\n{summary}\n\n");
        let out = crate::util::run_with_input(script("record-failure.sh", &home), input.as_bytes());
        ok(&out);
        let r = rows(
            &home,
            &format!("SELECT filepath FROM learnings WHERE title = 'Big {i}'"),
        );
        let file = std::fs::read_to_string(home.join(r[0]["filepath"].as_str().unwrap_or("")))
            .expect("file");
        assert!(file.contains(summary), "the whole summary is in the file");
    }
    let mut c = script("record-failure.sh", &home);
    c.args(["--title", "by flag", "--domain", "d", "--summary", &long]);
    ok(&run(c));
    let before = rows(&home, "SELECT count(*) AS n FROM learnings")[0]["n"].clone();
    for flood in [
        format!("t\nd\n3\ntags\n{}\n\n", line.repeat(200_000 / line.len())),
        format!("t\nd\n3\ntags\n{}\n\n", "z".repeat(1 << 20)),
        format!("{}\n", "t".repeat(1 << 20)),
    ] {
        let out = crate::util::run_with_input(script("record-failure.sh", &home), flood.as_bytes());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("131072 bytes"), "{err}");
    }
    assert_eq!(
        rows(&home, "SELECT count(*) AS n FROM learnings")[0]["n"],
        before
    );
}

#[test]
fn the_users_own_edits_stay_theirs() {
    let dir = TempDir::new();
    let home = dir.join("home");
    heuristic(&home, "ops", "first", "x");
    heuristic(&home, "ops", "second", "y");
    let file = home.join("memory/heuristics/ops.md");
    let committed = std::fs::read_to_string(&file).expect("read");
    // A staged hunk in the middle, and an unstaged one at the top.
    let staged = committed.replacen("\nx\n", "\nx, and a staged note\n", 1);
    std::fs::write(&file, &staged).expect("write");
    git(&home, &["add", "memory/heuristics/ops.md"]);
    let unstaged = format!("<!-- the user's -->\n{staged}");
    std::fs::write(&file, &unstaged).expect("write");
    let id = heuristic(&home, "ops", "third", "z");
    let text = std::fs::read_to_string(&file).expect("read");
    let entry = &text[unstaged.len()..];
    assert!(entry.contains(&format!("## H-{id}: third")), "{entry}");
    // The commit is the last commit's file and the record's entry.
    assert_eq!(
        git(&home, &["show", "HEAD:memory/heuristics/ops.md"]),
        format!("{committed}{entry}")
    );
    // The index keeps the user's staged hunk (and gets the entry); the work tree keeps both.
    assert_eq!(
        git(&home, &["show", ":memory/heuristics/ops.md"]),
        format!("{staged}{entry}")
    );
    assert_eq!(text, format!("{unstaged}{entry}"));
    let cached = git(&home, &["diff", "--cached"]);
    assert!(cached.contains("+x, and a staged note"), "{cached}");
    assert!(!cached.contains("the user's"), "{cached}");
    let work = git(&home, &["diff"]);
    assert!(work.contains("+<!-- the user's -->"), "{work}");
    assert!(!work.contains("staged note"), "{work}");
}

#[test]
fn small_things() {
    let dir = TempDir::new();
    let home = dir.join("home");
    // A home with its own .gitignore shows nothing of the scripts' as untracked.
    std::fs::create_dir_all(&home).expect("mkdir");
    git_init(&home, &[]);
    std::fs::write(home.join(".gitignore"), "memory/index.db*\nlogs/\n").expect("write");
    git(&home, &["add", ".gitignore"]);
    git(&home, &["commit", "-qm", "mine"]);
    heuristic(&home, "ops", "first", "x");
    assert_eq!(git(&home, &["status", "--porcelain"]), "");
    // query.sh: an empty domain is refused; a database without the tables of later versions
    // reads them as empty.
    for args in [&["--domain", ""][..], &["--domain="]] {
        let mut q = script("query.sh", &home);
        q.args(args);
        let out = run(q);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
    }
    sqlite(&home, "DROP TABLE experiments");
    for args in [
        &["--stats"][..],
        &["--context"],
        &["--domain", "ops"],
        &["--recent", "3"],
    ] {
        let mut q = script("query.sh", &home);
        q.args(args);
        let out = run(q);
        ok(&out);
    }
    let mut q = script("query.sh", &home);
    q.arg("--stats");
    let text = String::from_utf8_lossy(&run(q).stdout).to_string();
    assert!(text.contains("experiments: 0"), "{text}");
    assert!(text.contains("heuristics: 1"), "{text}");
}

/// A copy of the real legacy home (see tests/fixtures/real-home/README.md), in git as a user's
/// home would be after its first sync.
fn real_home(dir: &TempDir) -> std::path::PathBuf {
    let home = dir.join("home");
    let st = Command::new("cp")
        .arg("-r")
        .arg(crate::elf_home::root().join("tests/fixtures/real-home"))
        .arg(&home)
        .status()
        .expect("cp");
    assert!(st.success());
    git_init(&home, &[]);
    std::fs::write(home.join(".gitignore"), "memory/index.db*\nlogs/\n").expect("write");
    git(&home, &["add", "-A"]);
    git(&home, &["commit", "-qm", "the legacy home"]);
    fix_converges(&home);
    home
}

fn all_heading_ids(home: &Path) -> Vec<i64> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(home.join("memory/heuristics")).expect("heuristics") {
        let text = std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("## H-"))
                .filter_map(|l| l.split(':').next())
                .filter_map(|n| n.parse::<i64>().ok()),
        );
    }
    ids
}

#[test]
fn the_real_home_survives_a_lost_index_pasted_entries_and_forged_rows() {
    let dir = TempDir::new();
    let home = real_home(&dir);
    let before: Vec<(i64, String)> = rows(&home, "SELECT id, rule FROM heuristics ORDER BY id")
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap_or(0),
                r["rule"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut ids = all_heading_ids(&home);
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "after --fix every id is unique: {ids:?}");

    // Lost: the index is deleted; the next record's id is above every id of the markdown.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(home.join(format!("memory/index.db{suffix}")));
    }
    let new = heuristic(&home, "agent-behavior", "recorded after the reset", "x");
    assert!(new > *ids.last().unwrap_or(&0), "H-{new} given again");
    fix_converges(&home);
    let after: Vec<(i64, String)> = rows(
        &home,
        &format!("SELECT id, rule FROM heuristics WHERE id <> {new} ORDER BY id"),
    )
    .iter()
    .map(|r| {
        (
            r["id"].as_i64().unwrap_or(0),
            r["rule"].as_str().unwrap_or("").to_string(),
        )
    })
    .collect();
    assert_eq!(
        after, before,
        "the rebuilt index holds every heuristic under its own id"
    );

    // Pasted: a real entry copied into its own file and into another.
    let file = home.join("memory/heuristics/agent-behavior.md");
    let text = std::fs::read_to_string(&file).expect("read");
    let start = text.find("\n## H-").expect("an entry") + 1;
    let len = text[start + 3..]
        .find("\n## ")
        .map_or(text.len() - start, |i| i + 4);
    let entry = text[start..start + len].to_string();
    std::fs::write(&file, format!("{text}\n{entry}")).expect("write");
    let other = home.join("memory/heuristics/general.md");
    let mut t = std::fs::read_to_string(&other).unwrap_or_default();
    t.push_str(&format!("\n{entry}"));
    std::fs::write(&other, t).expect("write");
    // Forged: a legacy row whose rule carries a heading.
    sqlite(
        &home,
        "INSERT INTO heuristics (domain, rule, confidence) VALUES
           ('general', 'one' || char(10) || '## H-999: forged', 0.5)",
    );
    let (code, out, _) = sync(&home, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(out.matches("duplicate heuristic entry").count(), 2, "{out}");
    assert_eq!(
        out.matches("heuristic row without entry").count(),
        1,
        "{out}"
    );
    fix_converges(&home);
    assert!(!all_heading_ids(&home).contains(&999));
    let mut ids = all_heading_ids(&home);
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "{ids:?}");
}
