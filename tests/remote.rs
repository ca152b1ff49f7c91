//! One ELF home shared by several machines through a git remote (ELF_REMOTE, elf-commit
//! --push): two machines racing, conflicts, faults and kill -9 at each stage of a push.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::elf_home::{git, ok, rows, run};
use crate::remote_net::*;

fn id_of(o: &Output) -> u64 {
    let text = stdout(o);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ID: H-"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no id in {text}"))
}

#[test]
fn appends_from_two_machines_both_survive_with_unique_ids() {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    let oa = heuristic(a, "shared", "rule from a");
    ok(&oa);
    // b's own index gives 1 too; its push is rejected, its entry renumbered above the remote's.
    let ob = heuristic(b, "shared", "rule from b");
    ok(&ob);
    assert_eq!(id_of(&oa), 1);
    assert_eq!(id_of(&ob), 2, "{}", stdout(&ob));
    let text = remote_file(&s, "memory/heuristics/shared.md");
    assert!(
        !text.contains("<<<<<<<") && !text.contains(">>>>>>>"),
        "{text}"
    );
    assert_eq!(
        remote_entries(&s),
        vec![
            (1, "rule from a".to_string()),
            (2, "rule from b".to_string())
        ]
    );
    // b's row moved with its heading.
    let r = rows(b, "SELECT id FROM heuristics WHERE rule = 'rule from b'");
    assert_eq!(r[0]["id"].as_u64(), Some(2));
    assert_converged(&s);
    // query.sh on a answers from b's learnings too.
    let mut q = on("query.sh", a);
    q.args(["--domain", "shared"]);
    let o = run(q);
    ok(&o);
    assert!(stdout(&o).contains("rule from b"), "{}", stdout(&o));
}

#[test]
fn a_failure_title_taken_on_the_remote_takes_name_2_and_its_row_follows() {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    ok(&failure(a, "Disk full"));
    let ob = failure(b, "Disk full");
    ok(&ob);
    let path = stdout(&ob)
        .lines()
        .find_map(|l| l.trim().strip_prefix("File: ").map(String::from))
        .expect("File:");
    assert!(path.ends_with("_disk-full-2.md"), "{path}");
    let r = rows(b, "SELECT filepath FROM learnings WHERE type = 'failure'");
    assert_eq!(r[0]["filepath"].as_str(), Some(path.as_str()));
    assert_converged(&s);
}

#[test]
fn the_same_remote_served_by_git_daemon() {
    let s = shared(2, true);
    assert!(s.url.starts_with("git://127.0.0.1:"));
    for i in 0..2 {
        for m in &s.machines {
            ok(&heuristic(
                m,
                "net",
                &format!("rule {i} of {}", m.display()),
            ));
            ok(&failure(m, &format!("fail {i}")));
        }
    }
    assert_eq!(remote_entries(&s).len(), 4);
    assert_converged(&s);
}

fn commit_by_hand(home: &Path, path: &str, text: &str) {
    std::fs::write(home.join(path), text).expect("write");
    sh_git(home, &["add", path]);
    sh_git(
        home,
        &[
            "-c",
            "user.name=U",
            "-c",
            "user.email=u@x",
            "commit",
            "-q",
            "-m",
            "hand edit",
        ],
    );
}

fn push_sync(home: &Path) -> Output {
    let mut c = crate::util::cmd(env!("CARGO_BIN_EXE_elf-commit"));
    c.arg("--repo")
        .arg(home)
        .args(["--push", "origin", "--sync", "--push-timeout", "20s"])
        .env("GIT_CONFIG_NOSYSTEM", "1");
    c.stdin(Stdio::null()).output().expect("elf-commit")
}

#[test]
fn a_hand_edit_of_the_same_file_on_two_machines_is_refused_naming_it() {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    ok(&heuristic(a, "shared", "first"));
    ok(&heuristic(b, "other", "b's own"));
    ok(&push_sync(a));
    let path = "memory/heuristics/shared.md";
    let base = std::fs::read_to_string(a.join(path)).expect("read");
    commit_by_hand(a, path, &base.replace("first", "first, edited on a"));
    ok(&push_sync(a));
    commit_by_hand(b, path, &base.replace("first", "first, edited on b"));
    let before = git(b, &["rev-parse", "HEAD"]);
    let remote_before = git(&s.bare(), &["rev-parse", "main"]);
    let o = push_sync(b);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    let line = stderr(&o);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("refused") && line.contains(path), "{line}");
    assert_eq!(git(b, &["rev-parse", "HEAD"]), before);
    assert_eq!(git(&s.bare(), &["rev-parse", "main"]), remote_before);
    assert!(
        std::fs::read_to_string(b.join(path))
            .expect("read")
            .contains("edited on b")
    );
    // A record on b is still recorded, with the same warning.
    let o = heuristic(b, "other", "kept here");
    ok(&o);
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
}

#[test]
fn an_unreachable_remote_keeps_the_records_and_the_next_run_pushes_them() {
    let s = shared(1, false);
    let a = &s.machines[0];
    ok(&heuristic(a, "d", "before"));
    let away = s.dir.join("away.git");
    std::fs::rename(s.bare(), &away).expect("take the remote away");
    let o = heuristic(a, "d", "while away");
    ok(&o);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("warning: not pushed to origin"), "{err}");
    assert!(git(a, &["log", "--format=%s"]).contains("heuristic: while away"));
    std::fs::rename(&away, s.bare()).expect("bring it back");
    let o = failure(a, "after");
    ok(&o);
    assert_eq!(stderr(&o), "");
    let log = git(&s.bare(), &["log", "--format=%s", "main"]);
    assert!(
        log.contains("heuristic: while away") && log.contains("failure: after"),
        "{log}"
    );
    assert_converged(&s);
}

#[test]
fn a_rewritten_remote_history_is_refused_and_the_records_kept() {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    ok(&heuristic(a, "d", "one"));
    ok(&heuristic(a, "d", "two"));
    // Someone force-pushes the remote back by one commit.
    sh_git(b, &["fetch", "-q", "origin"]);
    sh_git(
        b,
        &[
            "push",
            "-q",
            "--force",
            "origin",
            "origin/main~1:refs/heads/main",
        ],
    );
    let forced = git(&s.bare(), &["rev-parse", "main"]);
    let o = heuristic(a, "d", "three");
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("rewritten"), "{err}");
    assert_eq!(git(&s.bare(), &["rev-parse", "main"]), forced);
    assert!(git(a, &["log", "--format=%s"]).contains("heuristic: three"));
    let o = push_sync(a);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
}

/// Records on two machines, one of them crashing (SIGKILL) at `stage` of its push; the next
/// run finishes: every record exactly once on the remote, ids unique, indexes complete.
fn crash_at(stage: &str) {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    ok(&heuristic(a, "d", "a one"));
    ok(&failure(a, "same"));
    let mut c = on("record-heuristic.sh", b);
    c.args(["--domain", "d", "--rule", "b one", "--explanation", "x"])
        .env("ELF_COMMIT_CRASH", stage);
    let o = run(c);
    assert_ne!(o.status.code(), None);
    let mut c = on("record-failure.sh", b);
    c.args(["--title", "same", "--domain", "d", "--summary", "x"]);
    ok(&run(c));
    assert_converged(&s);
    let log = git(&s.bare(), &["log", "--format=%s", "main"]);
    for subject in ["heuristic: a one", "heuristic: b one", "failure: same"] {
        let n = log.lines().filter(|l| *l == subject).count();
        let want = if subject == "failure: same" { 2 } else { 1 };
        assert_eq!(n, want, "{subject} in {log}");
    }
    let rules: Vec<String> = remote_entries(&s).into_iter().map(|e| e.1).collect();
    assert_eq!(rules, ["a one", "b one"]);
}

#[test]
fn kill_9_after_the_fetch_is_finished_by_the_next_run() {
    crash_at("fetched");
}

#[test]
fn kill_9_after_the_rows_moved_is_finished_by_the_next_run() {
    crash_at("renumbered");
}

#[test]
fn kill_9_while_the_files_move_is_finished_by_the_next_run() {
    crash_at("files");
}

#[test]
fn kill_9_after_the_remote_took_the_push_pushes_nothing_twice() {
    crash_at("pushed");
}

#[test]
fn an_experiment_started_on_one_machine_is_in_every_index() {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    let mut c = on("start-experiment.sh", a);
    c.args([
        "--name",
        "Shared cache",
        "--hypothesis",
        "## a heading in it\nwarm caches halve latency",
        "--success-criteria",
        "s",
        "--failure-criteria",
        "f",
    ]);
    ok(&run(c));
    ok(&heuristic(b, "shared", "after the experiment"));
    assert_converged(&s);
    let r = rows(
        b,
        "SELECT name, hypothesis, status, folder_path FROM experiments",
    );
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["name"].as_str(), Some("Shared cache"));
    assert_eq!(
        r[0]["hypothesis"].as_str(),
        Some("## a heading in it\nwarm caches halve latency")
    );
    assert_eq!(r[0]["status"].as_str(), Some("active"));
    let folder = r[0]["folder_path"].as_str().unwrap_or_default();
    assert!(b.join(folder).join("hypothesis.md").is_file(), "{folder}");
}

/// A `git` first on PATH that, for `verb` (fetch or push), says it is there and waits to be
/// killed, so that a test can SIGKILL a record in the middle of that git command.
fn stalling_git(dir: &Path, verb: &str) -> std::path::PathBuf {
    let bin = dir.join(format!("stall-{verb}"));
    std::fs::create_dir_all(&bin).expect("mkdir");
    let real = String::from_utf8_lossy(
        &Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .expect("which git")
            .stdout,
    )
    .trim()
    .to_string();
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = {verb} ]; then : > {mark}; sleep 60; fi\ndone\nexec {real} \"$@\"\n",
        mark = bin.join("reached").display()
    );
    let path = bin.join("git");
    std::fs::write(&path, script).expect("write");
    let mut perm = std::fs::metadata(&path).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).expect("chmod");
    bin
}

/// Runs `c` (a script on a machine) with a `git` first on PATH that stalls at `verb`, and
/// kills its whole process group (the script, elf-commit and git) once git is there.
fn kill_at_git(mut c: Command, dir: &Path, verb: &str) {
    use std::os::unix::process::CommandExt;
    let bin = stalling_git(dir, verb);
    let path = format!(
        "{}:{}",
        bin.display(),
        c.get_envs()
            .find(|(k, _)| *k == "PATH")
            .and_then(|(_, v)| v)
            .map(|v| v.to_string_lossy().to_string())
            .unwrap_or_default()
    );
    c.env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = c.spawn().expect("spawn");
    let reached = bin.join("reached");
    crate::util::wait_for(Duration::from_secs(60), "git to start", || reached.exists());
    // SAFETY: kill(2) of the process group this test made.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

/// A record on b killed (the script, elf-commit and git, the whole process group) while its
/// `git VERB` runs; the next run finishes: every record once on the remote, nothing lost.
fn killed_during(verb: &str) {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    ok(&heuristic(a, "d", "a one"));
    let mut c = on("record-heuristic.sh", b);
    c.args(["--domain", "d", "--rule", "b one", "--explanation", "x"]);
    kill_at_git(c, &s.dir.join("bin"), verb);
    ok(&heuristic(b, "d", "b two"));
    assert_converged(&s);
    let log = git(&s.bare(), &["log", "--format=%s", "main"]);
    for subject in ["heuristic: a one", "heuristic: b one", "heuristic: b two"] {
        let n = log.lines().filter(|l| *l == subject).count();
        assert_eq!(n, 1, "{subject} in {log}");
    }
    let rules: Vec<String> = remote_entries(&s).into_iter().map(|e| e.1).collect();
    assert_eq!(rules, ["a one", "b one", "b two"]);
}

#[test]
fn kill_9_during_git_fetch_is_finished_by_the_next_run() {
    killed_during("fetch");
}

#[test]
fn kill_9_during_git_push_is_finished_by_the_next_run() {
    killed_during("push");
}

/// Two experiments of one slug started in the same second on two machines claim one folder
/// name: b starts "Shared cache" and is killed while its push fetches (a's record made it
/// fetch); a then pushes another experiment in that very folder (its log.md byte for byte
/// b's); b's next runs (the first killed at `crash`, if any) move b's whole folder to `-2`,
/// with its row and its journaled record, and nothing is lost or merged.
fn experiments_claiming_one_folder(crash: Option<&str>) {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    ok(&heuristic(a, "d", "a one"));
    let mut c = on("start-experiment.sh", b);
    c.args([
        "--name",
        "Shared cache",
        "--hypothesis",
        "b's hypothesis",
        "--success-criteria",
        "s",
        "--failure-criteria",
        "f",
    ]);
    kill_at_git(c, &s.dir.join("bin"), "fetch");
    let folder = git(
        b,
        &[
            "log",
            "-1",
            "--format=",
            "--name-only",
            "--",
            "experiments/active",
        ],
    )
    .lines()
    .find_map(|l| l.strip_suffix("/hypothesis.md").map(String::from))
    .expect("b's experiment is committed on b");
    let moved = format!("{folder}-2");

    // a's experiment in the same folder.
    let b_hyp = std::fs::read_to_string(b.join(&folder).join("hypothesis.md")).expect("read");
    let b_log = std::fs::read(b.join(&folder).join("log.md")).expect("read");
    let a_hyp = b_hyp
        .replace("Shared cache", "Shared cache!")
        .replace("b's hypothesis", "a's hypothesis");
    std::fs::create_dir_all(a.join(&folder)).expect("mkdir");
    std::fs::write(a.join(&folder).join("log.md"), &b_log).expect("write");
    sh_git(a, &["add", &format!("{folder}/log.md")]);
    commit_by_hand(a, &format!("{folder}/hypothesis.md"), &a_hyp);
    ok(&push_sync(a));

    if let Some(stage) = crash {
        let mut c = on("record-heuristic.sh", b);
        c.args(["--domain", "d", "--rule", "b crashed", "--explanation", "x"])
            .env("ELF_COMMIT_CRASH", stage);
        let o = run(c);
        assert_ne!(o.status.code(), None);
    }
    ok(&heuristic(b, "d", "b one"));
    assert_converged(&s);

    let remote = |p: &str| remote_file(&s, p);
    assert_eq!(remote(&format!("{folder}/hypothesis.md")), a_hyp);
    assert_eq!(remote(&format!("{moved}/hypothesis.md")), b_hyp);
    assert_eq!(remote(&format!("{moved}/log.md")).as_bytes(), &b_log[..]);
    let files = git(
        &s.bare(),
        &["ls-tree", "-r", "--name-only", "main", "experiments/active"],
    );
    assert_eq!(files.lines().count(), 4, "{files}");
    let log = git(&s.bare(), &["log", "--format=%s", "main"]);
    let n = log
        .lines()
        .filter(|l| l.starts_with("experiment: "))
        .count();
    assert_eq!(n, 1, "b's experiment committed once: {log}");
    for m in [a, b] {
        let r = rows(m, "SELECT name, folder_path FROM experiments ORDER BY name");
        let got: Vec<(String, String)> = r
            .iter()
            .map(|r| {
                let f = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (f("name"), f("folder_path"))
            })
            .collect();
        if m == b {
            assert!(
                got.contains(&("Shared cache".to_string(), moved.clone())),
                "{}: {got:?}",
                m.display()
            );
        }
        assert!(
            got.iter()
                .all(|(_, f)| m.join(f).join("hypothesis.md").is_file()),
            "{}: {got:?}",
            m.display()
        );
    }
    let pending = rows(
        b,
        "SELECT count(*) AS n FROM elf_journal WHERE done_at IS NULL",
    );
    assert_eq!(pending[0]["n"].as_u64(), Some(0));
}

#[test]
fn experiments_of_one_folder_name_on_two_machines_both_survive() {
    experiments_claiming_one_folder(None);
}

#[test]
fn experiments_of_one_folder_name_survive_a_kill_9_while_the_files_move() {
    experiments_claiming_one_folder(Some("files"));
}

#[test]
fn experiments_of_one_folder_name_survive_a_kill_9_after_the_push() {
    experiments_claiming_one_folder(Some("pushed"));
}
