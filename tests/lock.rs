//! elf-lock: mutual exclusion under many processes, shared locks, timeouts, canonical order,
//! kill -9, symlinks, legacy directory locks, `--status`, and interop with flock(1).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::util::{TempDir, cmd, json_lines, scale, wait_for, watchdog};

const BIN: &str = env!("CARGO_BIN_EXE_elf-lock");
const LIMIT: Duration = Duration::from_secs(60);

fn lock() -> Command {
    cmd(BIN)
}

/// A process holding a lock until released: its command prints a line and waits for stdin.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    first: String,
}

impl Holder {
    /// Spawns `c` (whose command must print one line, then wait on stdin) and waits for the
    /// line: the handshake that says the lock is held.
    fn start(mut c: Command) -> Holder {
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn holder");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let first = watchdog(LIMIT, move || {
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("read handshake");
            line
        });
        assert!(!first.is_empty(), "holder exited before its handshake");
        Holder {
            child,
            stdin,
            first: first.trim_end().to_string(),
        }
    }

    fn pid(&self) -> i64 {
        i64::from(self.child.id())
    }

    /// Closes its stdin and waits for it.
    fn release(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let mut child = self.child;
        watchdog(LIMIT, move || child.wait().expect("wait holder"))
    }
}

/// `elf-lock ARGS -- sh -c 'echo in; read x'`.
fn hold(args: &[&str]) -> Holder {
    let mut c = lock();
    c.args(args)
        .args(["--", "sh", "-c", "echo in; read x; true"]);
    Holder::start(c)
}

fn status(dir: &TempDir, paths: &[&str]) -> Vec<Map<String, Value>> {
    let out = lock()
        .current_dir(dir.path())
        .arg("--status")
        .args(paths)
        .output()
        .expect("run --status");
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    assert_eq!(
        lines.len(),
        paths.iter().filter(|p| **p != "--mkdir").count()
    );
    lines
}

fn status_one(dir: &TempDir, path: &str) -> Map<String, Value> {
    status(dir, &[path]).remove(0)
}

fn pid_of(rec: &Value) -> Option<i64> {
    rec.get("pid").and_then(Value::as_i64)
}

fn stat_start_time(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let rest = &s[s.rfind(')').expect(")") + 1..];
    rest.split_whitespace()
        .nth(19)
        .expect("field 22")
        .parse()
        .expect("start time")
}

fn host_and_boot() -> (String, String) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    (host.trim().to_string(), boot.trim().to_string())
}

/// Gone or a zombie.
fn process_gone(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rfind(')')
            .is_some_and(|i| s[i + 1..].trim_start().starts_with('Z')),
    }
}

fn code(args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let out = lock()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run elf-lock");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Mutual exclusion

fn counter_run(dir: &TempDir, procs: usize, rounds: usize, locked: bool) -> u64 {
    std::fs::write(dir.join("count"), "0\n").expect("init counter");
    let body = "n=$(cat count); echo $((n+1)) > count";
    let step = if locked {
        format!("\"$ELF_LOCK\" L -c '{body}' || exit 1")
    } else {
        body.to_string()
    };
    let script = format!("i=0; while [ $i -lt {rounds} ]; do {step}; i=$((i+1)); done");
    let children: Vec<Child> = (0..procs)
        .map(|_| {
            cmd("sh")
                .current_dir(dir.path())
                .env("ELF_LOCK", BIN)
                .args(["-c", &script])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn incrementer")
        })
        .collect();
    watchdog(Duration::from_secs(300), move || {
        for mut c in children {
            assert!(c.wait().expect("wait").success(), "an incrementer failed");
        }
    });
    let text = std::fs::read_to_string(dir.join("count")).expect("read counter");
    text.trim().parse().unwrap_or(0)
}

#[test]
fn increments_under_the_lock_are_never_lost() {
    let dir = TempDir::new();
    let rounds = scale(200, 500);
    assert_eq!(counter_run(&dir, 8, rounds, true), 8 * rounds as u64);
}

#[test]
fn the_counter_test_can_fail_without_the_lock() {
    // The same read-modify-write without elf-lock loses updates: the test above can fail.
    let dir = TempDir::new();
    let lost = (0..3).any(|_| counter_run(&dir, 8, 50, false) < 400);
    assert!(lost, "no update was lost without the lock in three runs");
}

#[test]
fn shared_holders_overlap_and_an_exclusive_waiter_waits_for_all() {
    let dir = TempDir::new();
    let l = dir.join("L");
    let l = l.to_str().expect("utf-8");
    let log = dir.join("log");
    let a = hold(&["-s", l]);
    // The second shared holder gets in while the first still holds: they overlap.
    let b = hold(&["-s", l]);
    let st = status_one(&dir, l);
    assert_eq!(st["mode"], "shared");
    // /proc/locks is read a page at a time and may skip an entry while other locks churn:
    // poll rather than trust one read.
    wait_for(LIMIT, "both shared holders listed", || {
        status_one(&dir, l)["pids"].as_array().map(Vec::len) == Some(2)
    });
    let (c, _) = code(&["-n", l, "--", "true"], dir.path());
    assert_eq!(
        c,
        Some(75),
        "an exclusive lock was granted beside shared holders"
    );
    let mut waiter = lock()
        .args([
            l,
            "--",
            "sh",
            "-c",
            "echo exclusive >> \"$0\"",
            log.to_str().expect("utf-8"),
        ])
        .spawn()
        .expect("spawn waiter");
    wait_for(LIMIT, "the exclusive waiter to block", || {
        status_one(&dir, l)["waiters"] == 1
    });
    std::fs::write(&log, "").expect("log");
    for (name, h) in [("a", a), ("b", b)] {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open log");
        std::io::Write::write_all(&mut f, format!("released {name}\n").as_bytes()).expect("log");
        assert!(h.release().success());
    }
    assert!(watchdog(LIMIT, move || waiter.wait().expect("wait")).success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert_eq!(text, "released a\nreleased b\nexclusive\n");
}

// ---------------------------------------------------------------------------------------------
// Not waiting, and waiting with a deadline

#[test]
fn nonblock_on_a_held_lock_exits_75_or_the_e_value_at_once() {
    let dir = TempDir::new();
    let h = hold(&[dir.join("L").to_str().expect("utf-8")]);
    let start = Instant::now();
    let (c, err) = code(&["-n", "L", "--", "touch", "ran"], dir.path());
    assert_eq!(c, Some(75));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        err.starts_with("elf-lock: L is busy, not waiting: held by pid "),
        "{err}"
    );
    assert!(err.contains(&format!("pid {} ", h.pid())), "{err}");
    let (c, err) = code(&["-q", "-n", "-E", "9", "L", "true"], dir.path());
    assert_eq!((c, err.as_str()), (Some(9), ""));
    let (c, _) = code(&["-w", "0", "L", "true"], dir.path());
    assert_eq!(c, Some(75));
    assert!(
        !dir.join("ran").exists(),
        "the command ran without the lock"
    );
    assert!(h.release().success());
}

#[test]
fn timeout_gives_up_after_about_the_time_and_releases_a_partial_set() {
    let dir = TempDir::new();
    for f in ["A", "B"] {
        std::fs::write(dir.join(f), "").expect("create");
    }
    // Hold the file taken last in the canonical order (by inode), so the first is taken and
    // must be released on giving up.
    let ino = |f: &str| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir.join(f)).expect("stat"))
    };
    let (first, last) = if ino("A") < ino("B") {
        ("A", "B")
    } else {
        ("B", "A")
    };
    let h = hold(&[dir.join(last).to_str().expect("utf-8")]);
    let mut waiter = lock()
        .current_dir(dir.path())
        .args(["-w", "0.5", "A", "B", "--", "touch", "ran"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let status = watchdog(LIMIT, move || {
        let mut err = String::new();
        waiter
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read");
        (waiter.wait().expect("wait"), err)
    });
    let took = start.elapsed();
    assert_eq!(status.0.code(), Some(75), "{}", status.1);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "gave up after {took:?}"
    );
    assert!(
        status.1.contains(&format!("{last} not locked within 0.5s")),
        "{}",
        status.1
    );
    // The partial set was released: the first file is free again at once.
    let (c, _) = code(&["-n", first, "true"], dir.path());
    assert_eq!(c, Some(0));
    assert!(!dir.join("ran").exists());
    assert!(h.release().success());
}

#[test]
fn the_timeout_takes_the_durations_the_other_tools_take() {
    let dir = TempDir::new();
    let h = hold(&[dir.join("L").to_str().expect("utf-8")]);
    for w in ["500ms", "0.5s"] {
        let (c, err) = code(&["-w", w, "L", "true"], dir.path());
        assert_eq!(c, Some(75), "-w {w}: {err}");
        assert!(
            err.starts_with("elf-lock: L not locked within 0.5s: held by pid "),
            "-w {w}: {err}"
        );
    }
    assert!(h.release().success());
    let (c, err) = code(&["-w", "500ms", "L", "true"], dir.path());
    assert_eq!((c, err.as_str()), (Some(0), ""));
    let (c, err) = code(&["-w", "5x", "L", "true"], dir.path());
    assert_eq!(c, Some(64), "{err}");
    assert!(err.contains("--timeout") && err.contains("'5x'"), "{err}");
}

#[test]
fn a_long_wait_says_once_who_holds_the_lock() {
    let dir = TempDir::new();
    let h = hold(&[dir.join("L").to_str().expect("utf-8")]);
    let (c, err) = code(&["-w", "1.3", "L", "true"], dir.path());
    assert_eq!(c, Some(75));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    let expect = format!("elf-lock: waiting for L: held by pid {} on ", h.pid());
    assert!(lines[0].starts_with(&expect), "{err}");
    assert!(
        lines[0].ends_with("(command: sh -c echo in; read x; true)"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("elf-lock: L not locked within 1.3s: held by pid "),
        "{err}"
    );
    let (c, err) = code(&["-q", "-w", "1.2", "L", "true"], dir.path());
    assert_eq!((c, err.as_str()), (Some(75), ""));
    assert!(h.release().success());
}

// ---------------------------------------------------------------------------------------------
// Canonical order

#[test]
fn opposite_orders_never_deadlock() {
    let dir = TempDir::new();
    let rounds = scale(500, 2000);
    let script = |a: &str, b: &str| {
        format!(
            "i=0; while [ $i -lt {rounds} ]; do \"$ELF_LOCK\" {a} {b} -- true || exit 1; i=$((i+1)); done"
        )
    };
    let children: Vec<Child> = [script("A", "B"), script("B", "A")]
        .iter()
        .map(|s| {
            cmd("sh")
                .current_dir(dir.path())
                .env("ELF_LOCK", BIN)
                .args(["-c", s])
                .spawn()
                .expect("spawn")
        })
        .collect();
    watchdog(Duration::from_secs(120), move || {
        for mut c in children {
            assert!(c.wait().expect("wait").success());
        }
    });
}

#[test]
fn the_same_file_twice_counts_once() {
    let dir = TempDir::new();
    std::fs::write(dir.join("A"), "").expect("create");
    std::fs::hard_link(dir.join("A"), dir.join("A2")).expect("link");
    let out = watchdog(LIMIT, {
        let d = dir.path().to_path_buf();
        move || {
            lock()
                .current_dir(d)
                .args(["A", "./A", "A2", "--", "true"])
                .output()
                .expect("run")
        }
    });
    assert_eq!(out.status.code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// The command: status, signals, kill -9, inheritance

#[test]
fn the_command_status_passes_through() {
    let dir = TempDir::new();
    let d = dir.path();
    assert_eq!(code(&["L", "sh", "-c", "exit 7"], d).0, Some(7));
    assert_eq!(code(&["L", "-c", "exit 5"], d).0, Some(5));
    assert_eq!(code(&["-c", "exit 4", "L", "M"], d).0, Some(4));
    assert_eq!(
        code(&["L", "--", "sh", "-c", "kill -TERM $$"], d).0,
        Some(143)
    );
    let (c, err) = code(&["L", "--", "no-such-command-here"], d);
    assert_eq!(c, Some(127));
    assert_eq!(
        err,
        "elf-lock: cannot run no-such-command-here: No such file or directory\n"
    );
}

#[test]
fn sigterm_is_forwarded_and_the_lock_held_until_the_command_exits() {
    let dir = TempDir::new();
    let mut c = lock();
    c.current_dir(dir.path()).args([
        "L",
        "--",
        "sh",
        "-c",
        "trap 'echo late > after; exit 3' TERM; echo in; while :; do sleep 0.02; done",
    ]);
    let h = Holder::start(c);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(h.child.id() as i32, libc::SIGTERM) };
    let mut child = h.child;
    let st = watchdog(LIMIT, move || child.wait().expect("wait"));
    assert_eq!(st.code(), Some(3));
    assert!(
        dir.join("after").exists(),
        "elf-lock exited before its command"
    );
}

#[test]
fn a_signal_while_waiting_stops_the_wait_and_runs_nothing() {
    let dir = TempDir::new();
    let h = hold(&[dir.join("L").to_str().expect("utf-8")]);
    let mut w = lock()
        .current_dir(dir.path())
        .args(["L", "touch", "ran"])
        .spawn()
        .expect("spawn");
    wait_for(LIMIT, "the waiter to block", || {
        status_one(&dir, "L")["waiters"] == 1
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(w.id() as i32, libc::SIGINT) };
    let st = watchdog(LIMIT, move || w.wait().expect("wait"));
    assert_eq!(st.code(), Some(130));
    assert!(!dir.join("ran").exists());
    assert!(h.release().success());
}

#[test]
fn kill_9_takes_the_command_along_and_frees_the_lock_at_once() {
    let dir = TempDir::new();
    let mut c = lock();
    c.current_dir(dir.path())
        .args(["L", "--", "sh", "-c", "echo $$; exec sleep 60"]);
    let h = Holder::start(c);
    let command_pid: i64 = h.first.parse().expect("command pid");
    let mut waiter = lock()
        .current_dir(dir.path())
        .args(["L", "--", "true"])
        .spawn()
        .expect("spawn waiter");
    wait_for(LIMIT, "the waiter to block", || {
        status_one(&dir, "L")["waiters"] == 1
    });
    let killed = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(h.child.id() as i32, libc::SIGKILL) };
    let mut holder = h.child;
    holder.wait().expect("reap elf-lock");
    let st = watchdog(LIMIT, move || waiter.wait().expect("wait"));
    assert!(st.success());
    // The command held the lock too (inherited): the waiter got it only because the command
    // died with elf-lock, long before its 60 s sleep.
    assert!(killed.elapsed() < Duration::from_secs(20));
    wait_for(LIMIT, "the command to be gone", || {
        process_gone(command_pid)
    });
}

#[test]
fn the_command_inherits_the_lock_unless_o() {
    let dir = TempDir::new();
    let list = "for f in /proc/$$/fd/*; do readlink \"$f\"; done; true";
    let fds = |extra: &[&str]| {
        let out = lock()
            .current_dir(dir.path())
            .args(extra)
            .args(["L", "-c", list])
            .output()
            .expect("run");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| Path::new(l) == dir.join("L"))
    };
    assert!(fds(&[]), "the command did not inherit the lock");
    assert!(!fds(&["-o"]), "-o passed the lock on");
    // A background process started by the command keeps an inherited lock after both exit;
    // with -o it does not.
    for (flags, held) in [(&[][..], true), (&["-o"][..], false)] {
        let out = lock()
            .current_dir(dir.path())
            .args(flags)
            .args(["L", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .output()
            .expect("run");
        assert!(out.status.success());
        let bg: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("pid");
        let (c, _) = code(&["-q", "-n", "L", "true"], dir.path());
        // SAFETY: kill(2) on a process this test started.
        unsafe { libc::kill(bg, libc::SIGKILL) };
        assert_eq!(c, Some(if held { 75 } else { 0 }), "flags {flags:?}");
    }
}

/// The state letter in a `/proc/PID/stat` text: `None` when the text is empty (no process).
fn state_of(stat: &str) -> Option<char> {
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
}

/// Field 5, the process group, of a `/proc/PID/stat` text.
fn pgrp_of(stat: &str) -> i64 {
    let rest = &stat[stat.rfind(')').expect(")") + 1..];
    rest.split_whitespace()
        .nth(2)
        .expect("field 5")
        .parse()
        .expect("pgrp")
}

/// `elf-lock -n -q LOCK -c 'cat /proc/PID/stat'`: `None` when the lock is busy, else what the
/// process `pid` looked like while the lock was held (`None` inside when it was gone).
fn probe(dir: &Path, lock_args: &[&str], pid: i64) -> Option<Option<char>> {
    let out = lock()
        .current_dir(dir)
        .args(["-n", "-q"])
        .args(lock_args)
        .args(["-c", &format!("cat /proc/{pid}/stat 2>/dev/null; true")])
        .output()
        .expect("run probe");
    match out.status.code() {
        Some(75) => None,
        Some(0) => Some(state_of(&String::from_utf8_lossy(&out.stdout))),
        other => panic!(
            "probe exited {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn kill_9_of_elf_lock_never_frees_the_lock_while_a_process_of_the_command_runs() {
    use std::os::unix::process::CommandExt;
    // Each form: how the holder takes the lock, how a probe asks for it, and whether the kill
    // reaches elf-lock's whole process group (as `kill -9 -PGID` or `timeout -s KILL` do).
    type Form<'a> = (&'a [&'a str], &'a [&'a str], bool);
    let forms: [Form; 5] = [
        (&["L"], &["L"], false),
        (&["-o", "L"], &["L"], false),
        (&["-o", "L"], &["L"], true),
        (&["--mkdir", "D"], &["--mkdir", "D"], false),
        (&["-o", "--mkdir", "D"], &["--mkdir", "D"], true),
    ];
    for (flags, probe_args, whole_group) in forms {
        let dir = TempDir::new();
        let mut c = lock();
        // A process group of its own, as a script or a service runs elf-lock.
        c.current_dir(dir.path())
            .process_group(0)
            .args(flags)
            .args(["-c", "sleep 120 & echo $!; wait; echo done"]);
        let h = Holder::start(c);
        let grandchild: i64 = h.first.parse().expect("grandchild pid");
        let target = h.child.id() as i32;
        // SAFETY: kill(2) on our own child, or on the process group it leads.
        unsafe { libc::kill(if whole_group { -target } else { target }, libc::SIGKILL) };
        let mut holder = h.child;
        holder.wait().expect("reap elf-lock");
        // The invariant: whenever a probe gets the lock, no process of the command runs. With
        // the inherited lock the grandchild may run on, holding it; it is then ended here.
        wait_for(LIMIT, "the lock to be free", || {
            match probe(dir.path(), probe_args, grandchild) {
                None => {
                    if !flags.contains(&"-o") && !process_gone(grandchild) {
                        // SAFETY: kill(2) on a process this test started.
                        unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
                    }
                    false
                }
                Some(state) => {
                    assert!(
                        matches!(state, None | Some('Z')),
                        "{flags:?} (whole group: {whole_group}): got the lock while the command's \
                     process {grandchild} runs (state {state:?})"
                    );
                    true
                }
            }
        });
    }
}

/// The same kill of the whole group with `-o`, on a busy machine: the keeper is forked just
/// before the command may run and is often not yet scheduled when the command starts. It must
/// already be out of elf-lock's group then, or the kill takes it along and frees the lock while
/// the command's processes run.
#[test]
fn kill_9_of_the_whole_group_on_a_busy_machine_never_frees_an_o_lock_while_the_command_runs() {
    use std::os::unix::process::CommandExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..3)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    let mut bad = Vec::new();
    let forms: [(&[&str], &[&str]); 2] = [
        (&["-o", "L"], &["L"]),
        (&["-o", "--mkdir", "D"], &["--mkdir", "D"]),
    ];
    for (flags, probe_args) in forms {
        for _ in 0..scale(20, 100) {
            let dir = TempDir::new();
            let mut c = lock();
            c.current_dir(dir.path())
                .process_group(0)
                .args(flags)
                .args(["-c", "sleep 120 & echo $!; wait"]);
            let h = Holder::start(c);
            let grandchild: i64 = h.first.parse().expect("grandchild pid");
            // SAFETY: kill(2) on the process group our child leads.
            unsafe { libc::kill(-(h.child.id() as i32), libc::SIGKILL) };
            let mut holder = h.child;
            holder.wait().expect("reap elf-lock");
            wait_for(LIMIT, "the lock to be free", || {
                match probe(dir.path(), probe_args, grandchild) {
                    None => false,
                    Some(state) => {
                        if !matches!(state, None | Some('Z')) {
                            bad.push(format!("{flags:?}: process {grandchild} ({state:?})"));
                            // SAFETY: kill(2) on a process this test started.
                            unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
                        }
                        true
                    }
                }
            });
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        t.join().expect("busy thread");
    }
    assert!(
        bad.is_empty(),
        "got the lock while the command's process runs, {} times: {bad:?}",
        bad.len()
    );
}

#[test]
fn a_signal_to_elf_lock_ends_everything_the_command_started() {
    use std::os::unix::process::CommandExt;
    for flags in [&[][..], &["-o"][..]] {
        let dir = TempDir::new();
        let mut c = lock();
        // The grandchild ignores SIGTERM, so only the SIGKILL that follows can end it.
        c.current_dir(dir.path())
            .process_group(0)
            .args(flags)
            .args([
                "L",
                "-c",
                r#"sh -c 'trap "" TERM; echo $$; exec sleep 120' & wait"#,
            ]);
        let h = Holder::start(c);
        let grandchild: i64 = h.first.parse().expect("grandchild pid");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(h.child.id() as i32, libc::SIGTERM) };
        let mut child = h.child;
        let st = watchdog(LIMIT, move || child.wait().expect("wait"));
        assert_eq!(st.code(), Some(143), "{flags:?}");
        // Well before its sleep ends.
        wait_for(
            Duration::from_secs(20),
            "the grandchild to be killed",
            || process_gone(grandchild),
        );
        assert_eq!(code(&["-n", "-q", "L", "true"], dir.path()).0, Some(0));
    }
}

#[test]
fn the_command_leads_its_own_group_except_in_the_foreground_of_a_terminal() {
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new();
    // A pseudo-terminal, whose other side becomes elf-lock's controlling terminal.
    // SAFETY: posix_openpt(3), grantpt(3), unlockpt(3) and ptsname_r(3) on the new master,
    // with a buffer of the size given.
    let (master, slave) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut buf = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, buf.as_mut_ptr(), buf.len()), 0);
        (m, std::ffi::CStr::from_ptr(buf.as_ptr()).to_owned())
    };
    for tty in [false, true] {
        let mut c = lock();
        c.current_dir(dir.path())
            .stdin(Stdio::null())
            .args(["L", "-c", "cat /proc/$$/stat > st"]);
        let slave = slave.clone();
        // SAFETY: between fork and exec only async-signal-safe calls: setsid(2), open(2),
        // ioctl(2) and close(2) on the terminal named by a string made before the fork.
        unsafe {
            c.pre_exec(move || {
                libc::setsid();
                if tty {
                    let fd = libc::open(slave.as_ptr(), libc::O_RDWR);
                    if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                Ok(())
            });
        }
        let mut child = c.spawn().expect("spawn");
        let elf_lock = i64::from(child.id());
        assert!(child.wait().expect("wait").success());
        let stat = std::fs::read_to_string(dir.join("st")).expect("st");
        let command: i64 = stat
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("pid");
        let want = if tty { elf_lock } else { command };
        assert_eq!(pgrp_of(&stat), want, "terminal: {tty}");
    }
    // SAFETY: closing the master opened above.
    unsafe { libc::close(master) };
}

#[test]
fn no_fork_runs_the_command_as_the_holder() {
    let dir = TempDir::new();
    let mut c = lock();
    c.current_dir(dir.path())
        .args(["-F", "L", "-c", "echo $$; read x; true"]);
    let h = Holder::start(c);
    assert_eq!(h.first.parse::<i64>().ok(), Some(h.pid()));
    let st = status_one(&dir, "L");
    assert_eq!(pid_of(&st["holder"]), Some(h.pid()));
    assert!(h.release().success());
}

// ---------------------------------------------------------------------------------------------
// Lock files

#[test]
fn a_symlinked_lock_path_is_refused_and_nothing_is_created() {
    let dir = TempDir::new();
    std::os::unix::fs::symlink(dir.join("target"), dir.join("L")).expect("symlink");
    let (c, err) = code(&["L", "--", "touch", "ran"], dir.path());
    assert_eq!(c, Some(77));
    assert_eq!(
        err,
        "elf-lock: lock file L is a symlink; refusing to follow it\n"
    );
    assert!(!dir.join("target").exists());
    assert!(!dir.join("ran").exists());
    let (c, _) = code(&["--status", "L"], dir.path());
    assert_eq!(c, Some(77));
    assert!(!dir.join("target").exists());
}

#[test]
fn lock_files_are_created_with_the_mode_and_never_deleted() {
    let dir = TempDir::new();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        code(&["--mode", "0600", "L", "true"], dir.path()).0,
        Some(0)
    );
    let mode = std::fs::metadata(dir.join("L"))
        .expect("lock file kept")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        code(&["--mode", "999", "M", "true"], dir.path()).0,
        Some(64)
    );
}

#[test]
fn the_holder_record_is_one_json_line() {
    let dir = TempDir::new();
    let h = hold(&[dir.join("L").to_str().expect("utf-8")]);
    let text = std::fs::read_to_string(dir.join("L")).expect("read");
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "{text:?}"
    );
    let rec = json_lines(text.as_bytes()).remove(0);
    let keys: Vec<&str> = rec.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["pid", "host", "boot_id", "start_time", "since", "command"]
    );
    let (host, boot) = host_and_boot();
    assert_eq!(rec["pid"].as_i64(), Some(h.pid()));
    assert_eq!(rec["host"], host.as_str());
    assert_eq!(rec["boot_id"], boot.as_str());
    assert_eq!(
        rec["start_time"].as_u64(),
        Some(stat_start_time(&h.pid().to_string()))
    );
    let since = rec["since"].as_str().expect("since");
    assert!(
        since.len() == 24 && since.ends_with('Z') && since.as_bytes()[10] == b'T',
        "{since}"
    );
    assert_eq!(
        rec["command"],
        serde_json::json!(["sh", "-c", "echo in; read x; true"])
    );
    assert!(h.release().success());
}

// ---------------------------------------------------------------------------------------------
// --status

#[test]
fn status_of_free_held_and_stale_locks() {
    let dir = TempDir::new();
    let missing = status_one(&dir, "L");
    assert_eq!(
        (missing["exists"].clone(), missing["held"].clone()),
        (Value::from(false), Value::from(false))
    );
    assert!(!dir.join("L").exists(), "--status created the lock file");
    std::fs::write(dir.join("L"), "").expect("create");
    let free = status_one(&dir, "L");
    let keys: Vec<&str> = free.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "path",
            "kind",
            "exists",
            "held",
            "mode",
            "holder",
            "stale_record",
            "pids",
            "waiters"
        ]
    );
    assert_eq!(free["held"], false);
    assert_eq!(free["holder"], Value::Null);
    let h = hold(&[dir.join("L").to_str().expect("utf-8")]);
    let held = status_one(&dir, "L");
    assert_eq!(held["held"], true);
    assert_eq!(held["mode"], "exclusive");
    assert_eq!(pid_of(&held["holder"]), Some(h.pid()));
    assert_eq!(held["pids"], serde_json::json!([h.pid()]));
    assert_eq!(held["stale_record"], Value::Null);
    let pid = h.pid();
    assert!(h.release().success());
    let stale = status_one(&dir, "L");
    assert_eq!(stale["held"], false);
    assert_eq!(stale["holder"], Value::Null);
    assert_eq!(pid_of(&stale["stale_record"]), Some(pid));
}

#[test]
fn status_never_reports_a_record_of_a_live_process_that_does_not_hold_the_lock() {
    let dir = TempDir::new();
    // A record naming a live process (this test) with its true start time, while flock(1)
    // holds the lock: the kernel does not list that pid, so it is not the holder.
    let (host, boot) = host_and_boot();
    let me = std::process::id();
    let rec = serde_json::json!({"pid": me, "host": host, "boot_id": boot,
        "start_time": stat_start_time("self"), "since": "2026-01-01T00:00:00.000Z", "command": ["x"]});
    std::fs::write(dir.join("L"), format!("{rec}\n")).expect("write record");
    let mut c = cmd("flock");
    c.current_dir(dir.path())
        .args(["L", "sh", "-c", "echo in; read x; true"]);
    let h = Holder::start(c);
    let st = status_one(&dir, "L");
    assert_eq!(st["held"], true);
    assert_eq!(st["mode"], "exclusive");
    assert_eq!(st["holder"], Value::Null);
    assert_eq!(pid_of(&st["stale_record"]), Some(i64::from(me)));
    assert!(h.release().success());
}

// ---------------------------------------------------------------------------------------------
// Interop with flock(1)

#[test]
fn flock1_and_elf_lock_exclude_each_other() {
    let dir = TempDir::new();
    let mut c = cmd("flock");
    c.current_dir(dir.path())
        .args(["L", "sh", "-c", "echo in; read x; true"]);
    let h = Holder::start(c);
    assert_eq!(code(&["-q", "-n", "L", "true"], dir.path()).0, Some(75));
    assert!(h.release().success());
    let h = hold(&[dir.join("L").to_str().expect("utf-8")]);
    let st = cmd("flock")
        .current_dir(dir.path())
        .args(["-n", "L", "true"])
        .status()
        .expect("flock");
    assert_eq!(st.code(), Some(1));
    assert!(h.release().success());
    let st = cmd("flock")
        .current_dir(dir.path())
        .args(["-n", "L", "true"])
        .status()
        .expect("flock");
    assert!(st.success());
}

// ---------------------------------------------------------------------------------------------
// Legacy directory locks

fn owner_record(pid: u32, start_time: u64) -> String {
    let (host, boot) = host_and_boot();
    let rec = serde_json::json!({"pid": pid, "host": host, "boot_id": boot, "start_time": start_time,
        "since": "2026-01-01T00:00:00.000Z", "command": ["legacy"]});
    format!("{rec}\n")
}

fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id();
    c.wait().expect("wait");
    pid
}

fn set_old(path: &Path, secs_ago: i64) {
    let c = std::ffi::CString::new(path.to_str().expect("utf-8")).expect("cstring");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let t = libc::timespec {
        tv_sec: now - secs_ago,
        tv_nsec: 0,
    };
    // SAFETY: a valid path and two valid timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) };
    assert_eq!(r, 0);
}

#[test]
fn mkdir_lock_is_taken_with_an_owner_file_and_removed_on_release() {
    let dir = TempDir::new();
    let out = lock()
        .current_dir(dir.path())
        .args(["--mkdir", "D", "--", "cat", "D/owner"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = json_lines(&out.stdout).remove(0);
    assert!(rec["pid"].as_u64().is_some() && rec["start_time"].as_u64().is_some());
    assert!(
        !dir.join("D").exists(),
        "the lock directory was not removed"
    );
}

#[test]
fn mkdir_lock_of_a_dead_owner_is_broken() {
    let dir = TempDir::new();
    std::fs::create_dir(dir.join("D")).expect("mkdir");
    std::fs::write(dir.join("D/owner"), owner_record(dead_pid(), 1)).expect("owner");
    let (c, err) = code(&["-w", "5", "--mkdir", "D", "--", "true"], dir.path());
    assert_eq!(c, Some(0), "{err}");
    assert!(
        err.starts_with("elf-lock: warning: broke stale lock directory "),
        "{err}"
    );
    assert!(!dir.join("D").exists());
}

#[test]
fn mkdir_lock_of_a_live_owner_is_never_broken() {
    let dir = TempDir::new();
    std::fs::create_dir(dir.join("D")).expect("mkdir");
    let me = std::process::id();
    let owner = owner_record(me, stat_start_time("self"));
    std::fs::write(dir.join("D/owner"), &owner).expect("owner");
    set_old(&dir.join("D"), 3600);
    let (c, err) = code(
        &[
            "-w",
            "0.3",
            "--stale-after",
            "1",
            "--mkdir",
            "D",
            "--",
            "touch",
            "ran",
        ],
        dir.path(),
    );
    assert_eq!(c, Some(75), "{err}");
    assert!(err.contains(&format!("held by pid {me} (alive)")), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("D/owner")).expect("owner kept"),
        owner
    );
    // A real elf-lock owner.
    let h = hold(&["--mkdir", dir.join("E").to_str().expect("utf-8")]);
    assert_eq!(
        code(&["-n", "--mkdir", "E", "--", "touch", "ran"], dir.path()).0,
        Some(75)
    );
    let st = status(&dir, &["--mkdir", "E"]).remove(0);
    assert_eq!(pid_of(&st["holder"]), Some(h.pid()));
    assert_eq!(st["kind"], "mkdir");
    assert!(h.release().success());
    assert!(!dir.join("E").exists());
    assert!(!dir.join("ran").exists());
}

#[test]
fn racing_breakers_of_one_stale_mkdir_lock_leave_exactly_one_holder() {
    let dir = TempDir::new();
    std::fs::create_dir(dir.join("D")).expect("mkdir");
    std::fs::write(dir.join("D/owner"), owner_record(dead_pid(), 1)).expect("owner");
    let n = scale(10, 30);
    let mut children: Vec<Child> = (0..n)
        .map(|_| {
            lock()
                .current_dir(dir.path())
                .args([
                    "-n",
                    "--mkdir",
                    "D",
                    "--",
                    "sh",
                    "-c",
                    "echo won; read x; true",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    // Every loser exits 75 on its own; the winner holds until released.
    let mut ended = vec![false; n];
    let start = Instant::now();
    while ended.iter().filter(|e| **e).count() < n - 1 {
        assert!(start.elapsed() < LIMIT, "deadlock: losers did not give up");
        for (c, e) in children
            .iter_mut()
            .zip(ended.iter_mut())
            .filter(|(_, e)| !**e)
        {
            if let Some(st) = c.try_wait().expect("try_wait") {
                assert_eq!(st.code(), Some(75), "a racer ended with {st:?}");
                *e = true;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let w = ended.iter().position(|e| !e).expect("a winner");
    let mut line = String::new();
    BufReader::new(children[w].stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line, "won\n");
    drop(children[w].stdin.take());
    let st = watchdog(LIMIT, move || {
        let st = children[w].wait().expect("wait");
        for mut c in children {
            let _ = c.wait();
        }
        st
    });
    assert!(st.success());
    assert!(!dir.join("D").exists());
}

#[test]
fn an_ownerless_legacy_mkdir_lock_is_broken_only_when_older_than_stale_after() {
    let dir = TempDir::new();
    std::fs::create_dir(dir.join("D")).expect("mkdir");
    let (c, err) = code(
        &["-w", "0.2", "--mkdir", "D", "--", "touch", "ran"],
        dir.path(),
    );
    assert_eq!(c, Some(75), "{err}");
    assert!(err.contains("legacy holder (no owner file)"), "{err}");
    assert!(dir.join("D").exists() && !dir.join("ran").exists());
    set_old(&dir.join("D"), 301);
    let (c, err) = code(&["--mkdir", "D", "--", "touch", "ran"], dir.path());
    assert_eq!(c, Some(0), "{err}");
    assert!(
        err.starts_with("elf-lock: warning: broke stale lock directory "),
        "{err}"
    );
    assert!(err.contains("no owner file"), "{err}");
    assert!(dir.join("ran").exists() && !dir.join("D").exists());
}

#[test]
fn an_owner_file_that_yields_no_record_is_named_not_called_missing() {
    let dir = TempDir::new();
    let owner = dir.join("D/owner");
    let shown = owner.to_str().expect("utf-8").to_string();
    type Make = fn(&Path);
    let cases: [(&str, Make); 3] = [
        ("cannot be parsed as a holder record", |p| {
            std::fs::write(p, "{not json\n").expect("owner")
        }),
        ("is empty, not a holder record", |p| {
            std::fs::write(p, "").expect("owner")
        }),
        ("cannot be read: Is a directory", |p| {
            std::fs::create_dir(p).expect("owner dir")
        }),
    ];
    for (why, make) in cases {
        std::fs::create_dir(dir.join("D")).expect("mkdir");
        make(&owner);
        let (c, err) = code(&["-n", "--mkdir", "D", "--", "touch", "ran"], dir.path());
        assert_eq!(c, Some(75), "{err}");
        let said = format!(
            "elf-lock: {} is busy, not waiting: held by an unknown holder (its owner file \
             \"{shown}\" {why}) for ",
            dir.join("D").display()
        );
        assert!(
            err.starts_with(&said) && err.ends_with("s; broken after 300s\n"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        // It still counts as a holder without an owner: broken by age alone.
        set_old(&dir.join("D"), 301);
        let (c, err) = code(&["--mkdir", "D", "--", "touch", "ran"], dir.path());
        assert_eq!(c, Some(0), "{err}");
        assert!(
            err.starts_with("elf-lock: warning: broke stale lock directory ")
                && err.contains(&format!("its owner file \"{shown}\" {why}")),
            "{err}"
        );
        assert!(dir.join("ran").exists() && !dir.join("D").exists());
        std::fs::remove_file(dir.join("ran")).expect("rm ran");
    }
}

// ---------------------------------------------------------------------------------------------
// Usage

#[test]
fn usage_errors_exit_64() {
    let dir = TempDir::new();
    for args in [
        &["L"][..],
        &["L", "--"],
        &["-c", "x", "L", "--", "y"],
        &["-E", "300", "L", "true"],
        &["-w", "-1", "L", "true"],
        &["-w", "soon", "L", "true"],
        &["-F", "-o", "L", "true"],
        &["-s", "--mkdir", "D", "--", "true"],
        &["--stale-after", "0", "--mkdir", "D", "--", "true"],
        &["--status"],
        &["--status", "-c", "x", "L"],
    ] {
        let (c, err) = code(args, dir.path());
        assert_eq!(c, Some(64), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    assert!(!dir.join("L").exists() && !dir.join("D").exists());
}

// ---------------------------------------------------------------------------------------------
// flock(1)'s descriptor form

#[test]
fn the_descriptor_form_locks_for_the_calling_shell() {
    let dir = TempDir::new();
    // The shell keeps the lock after elf-lock has exited; the record names the shell, and
    // --status confirms it through the shell's own descriptor.
    let mut c = cmd("sh");
    c.current_dir(dir.path()).env("ELF_LOCK", BIN).args([
        "-c",
        "exec 9>L; \"$ELF_LOCK\" -n 9 || exit 1; echo $$; read x; true",
    ]);
    let h = Holder::start(c);
    let shell: i64 = h.first.parse().expect("shell pid");
    let st = status_one(&dir, "L");
    assert_eq!(st["held"], true);
    assert_eq!(pid_of(&st["holder"]), Some(shell));
    let (c, err) = code(&["-n", "L", "true"], dir.path());
    assert_eq!(c, Some(75));
    assert!(err.contains(&format!("held by pid {shell} ")), "{err}");
    assert!(h.release().success());
    assert_eq!(code(&["-n", "L", "true"], dir.path()).0, Some(0));
    // -u releases it; a closed descriptor is a usage error.
    let out = cmd("sh")
        .current_dir(dir.path())
        .env("ELF_LOCK", BIN)
        .args([
            "-c",
            "exec 9>L; \"$ELF_LOCK\" 9 && \"$ELF_LOCK\" -u 9 && \"$ELF_LOCK\" -n L true",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(code(&["7"], dir.path()).0, Some(64));
}

#[test]
fn a_closed_standard_output_never_becomes_the_lock_file() {
    // With descriptor 1 closed, the lock file must not be opened as descriptor 1 and handed
    // to the command as its standard output.
    let dir = TempDir::new();
    let out = cmd("sh")
        .current_dir(dir.path())
        .env("ELF_LOCK", BIN)
        .args([
            "-c",
            "exec >&-; \"$ELF_LOCK\" L -- sh -c 't=$(readlink /proc/$$/fd/1); echo \"$t\" > where; echo x' 2>err",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&std::fs::read(dir.join("err")).unwrap_or_default())
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("where")).expect("where"),
        "/dev/null\n"
    );
    let text = std::fs::read_to_string(dir.join("L")).expect("lock file");
    assert_eq!(
        json_lines(text.as_bytes()).len(),
        1,
        "the lock file holds more than the record: {text:?}"
    );
}

#[test]
fn a_directory_is_locked_as_flock1_locks_it() {
    let dir = TempDir::new();
    std::fs::create_dir(dir.join("D")).expect("mkdir");
    let h = hold(&[dir.join("D").to_str().expect("utf-8")]);
    let st = cmd("flock")
        .current_dir(dir.path())
        .args(["-n", "D", "true"])
        .status()
        .expect("flock");
    assert_eq!(st.code(), Some(1));
    assert_eq!(status_one(&dir, "D")["held"], true);
    assert!(h.release().success());
    assert_eq!(code(&["-n", "D", "true"], dir.path()).0, Some(0));
}

// ---------------------------------------------------------------------------------------------
// Nested locks: a lock an enclosing elf-lock holds for this process tree

/// `DEV:INO` of a file, as ELF_LOCK_HELD names it.
fn dev_ino(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).expect("stat lock file");
    format!("{}:{}", m.dev(), m.ino())
}

#[test]
fn a_lock_an_enclosing_elf_lock_holds_counts_as_held() {
    let dir = TempDir::new();
    let inner = format!("{BIN} -w 30 L -- touch ran");
    for args in [
        // elf-lock inside elf-lock's command, directly and through a shell
        vec!["L", "--", BIN, "-w", "30", "L", "--", "touch", "ran"],
        vec!["L", "--", "sh", "-c", "\"$0\" -n L touch ran", BIN],
        vec!["-c", &inner, "L"],
        // -F: the command took over the holder's pid
        vec!["-F", "L", "--", BIN, "-n", "L", "--", "touch", "ran"],
        // shared under exclusive, shared under shared
        vec!["L", "--", BIN, "-s", "-n", "L", "--", "touch", "ran"],
        vec!["-s", "L", "--", BIN, "-s", "-n", "L", "--", "touch", "ran"],
        // descriptor form
        vec!["L", "--", "sh", "-c", "\"$0\" -n 9 9<L && touch ran", BIN],
    ] {
        let (c, err) = code(&args, dir.path());
        assert_eq!((c, err.as_str()), (Some(0), ""), "{args:?}");
        assert!(
            dir.join("ran").exists(),
            "{args:?}: the command did not run"
        );
        std::fs::remove_file(dir.join("ran")).expect("rm ran");
    }
    // The nested one left the holder record of the outer one alone, and nothing is held now.
    let out = lock()
        .current_dir(dir.path())
        .args(["L", "--", BIN, "L", "--", "cat", "L"])
        .output()
        .expect("run");
    let rec: Value = serde_json::from_slice(&out.stdout).expect("holder record");
    assert_eq!(rec["command"][0].as_str(), Some(BIN), "{rec}");
    let st = status(&dir, &["L"]);
    assert_eq!(st[0]["held"], Value::Bool(false));
}

#[test]
fn a_lock_an_ancestor_holds_without_passing_it_down_is_refused_at_once() {
    let dir = TempDir::new();
    for (args, why) in [
        // -o: the command does not inherit the lock, so it is not passed down
        (
            vec!["-o", "L", "--", BIN, "L", "--", "touch", "ran"],
            "elf-lock: L: held by pid ",
        ),
        (
            vec![
                "L",
                "--",
                "env",
                "-u",
                "ELF_LOCK_HELD",
                BIN,
                "L",
                "touch",
                "ran",
            ],
            "elf-lock: L: held by this process through an inherited descriptor, not passed down (ELF_LOCK_HELD): waiting for it would never end",
        ),
        // an exclusive lock under a shared hold cannot be re-entered
        (
            vec!["-s", "L", "--", BIN, "L", "--", "touch", "ran"],
            "elf-lock: L: held shared by this process through an inherited descriptor: an exclusive lock under it would wait forever",
        ),
    ] {
        // No -w: without the check, the inner elf-lock would wait for ever.
        let out = watchdog(LIMIT, {
            let mut c = lock();
            c.current_dir(dir.path()).args(&args);
            move || c.output().expect("run")
        });
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with(why), "{args:?}: {err}");
        assert!(!dir.join("ran").exists(), "{args:?}: ran without the lock");
    }
    // -o names the enclosing elf-lock; -E applies, and -q does not hide the mistake.
    let (c, err) = code(
        &["-o", "L", "--", BIN, "-q", "-E", "9", "L", "--", "true"],
        dir.path(),
    );
    assert_eq!(c, Some(9), "{err}");
    assert!(
        err.contains("(elf-lock), an ancestor of this process, not passed down"),
        "{err}"
    );
}

#[test]
fn a_forged_variable_does_not_skip_a_lock_held_by_another_process() {
    let dir = TempDir::new();
    let h = hold(&[dir.join("L").to_str().expect("utf-8")]);
    let id = dev_ino(&dir.join("L"));
    // The holder's own pid, ours (an ancestor that holds nothing), init's.
    let forged = format!("{id}:{},{id}:{},{id}:1", h.pid(), std::process::id());
    for args in [
        &["-w", "0.3", "L", "--", "touch", "ran"][..],
        &["-n", "L", "--", "touch", "ran"],
        &["-s", "-n", "L", "--", "touch", "ran"],
    ] {
        let out = lock()
            .current_dir(dir.path())
            .env("ELF_LOCK_HELD", &forged)
            .args(args)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{args:?}: {err}");
        assert!(err.contains(&format!("held by pid {} ", h.pid())), "{err}");
        assert!(!err.contains("ancestor"), "{err}");
        assert!(!dir.join("ran").exists(), "{args:?}: ran without the lock");
    }
    assert!(h.release().success());
}

#[test]
fn a_wait_on_a_lock_another_ancestor_holds_says_so_at_once() {
    // flock(1) -o holds L and does not pass it down; its child's elf-lock waits for it (it may
    // be released: flock is not an elf-lock), but says at once that an ancestor holds it,
    // before the usual one-second notice.
    let dir = TempDir::new();
    let lock = dir.join("L");
    let body = format!(
        "{} -w 500ms {} true",
        env!("CARGO_BIN_EXE_elf-lock"),
        lock.display()
    );
    let out = std::process::Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sh", "-c", &body])
        .env_remove("ELF_LOCK_HELD")
        .output()
        .expect("flock");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("an ancestor of this process"), "{err}");
    assert!(err.contains("(flock)"), "{err}");
    // With -q, nothing but the status.
    let body = format!(
        "{} -q -w 500ms {} true",
        env!("CARGO_BIN_EXE_elf-lock"),
        lock.display()
    );
    let out = std::process::Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sh", "-c", &body])
        .env_remove("ELF_LOCK_HELD")
        .output()
        .expect("flock");
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// The kernel hands `/proc/locks` out a page per read(2) and resumes by position: while other
/// processes take and release locks, a read can show one entry twice or skip it. Each holder
/// is still named once, and a held lock is never taken for free.
#[test]
fn a_holder_is_named_once_while_proc_locks_shifts_under_the_reader() {
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let t = TempDir::new();
    // Enough other locks for /proc/locks to span pages, taken and released in a loop.
    let others: Vec<std::fs::File> = (0..300)
        .map(|i| std::fs::File::create(t.join(format!("other-{i}"))).expect("create"))
        .collect();
    for f in &others {
        // SAFETY: flock(2) on a descriptor we own.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let fd = others[i % others.len()].as_raw_fd();
                // SAFETY: flock(2) on descriptors this thread owns.
                unsafe {
                    libc::flock(fd, libc::LOCK_UN);
                    libc::flock(fd, libc::LOCK_EX);
                }
                i = i.wrapping_add(7919);
            }
        })
    };

    let path = t.join("l.lock");
    let held = std::fs::File::create(&path).expect("create");
    // SAFETY: flock(2) on a descriptor we own.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let pid = std::process::id();
    let want = format!(
        "elf-lock: l.lock is busy, not waiting: held by pid {pid} (no live holder record)\n"
    );
    let mut wrong = Vec::new();
    for _ in 0..scale(100, 400) {
        let out = lock()
            .args(["-n", "l.lock", "--", "touch", "ran"])
            .current_dir(t.path())
            .output()
            .expect("run");
        if out.status.code() != Some(75) || out.stderr != want.as_bytes() {
            wrong.push(format!(
                "{:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let status = status_one(&t, "l.lock");
        if status["pids"] != serde_json::json!([pid]) || status["held"] != true {
            wrong.push(format!("--status: {}", Value::Object(status)));
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().expect("churn");
    assert!(
        !t.join("ran").exists(),
        "the command ran while the lock was held"
    );
    assert!(
        wrong.is_empty(),
        "{} of the runs:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
