//! Load and crash tests: many processes on one ELF home, and SIGKILL at random moments.
//!
//! Small counts by default; `ELF_STRESS_FULL=1` runs the full counts (20 x 50 failures,
//! 10 x 50 heuristics and 20 readers; 50 writers and 100 readers on elf-db; 500 chaos
//! iterations). Each test prints its figures on stderr (`cargo test --test stress --
//! --nocapture`).

#[path = "elf_home.rs"]
mod elf_home;
#[path = "remote_net.rs"]
mod remote_net;
#[path = "util.rs"]
mod util;

mod faults;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use elf_home::{assert_db_ok, assert_git_ok, ok, rows, run, script, subjects};
use util::{TempDir, cmd, scale, watchdog};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, records: usize, wall: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    eprintln!(
        "{what}: {records} records in {:.1} s, {:.1} records/s, latency p50 {} ms, p99 {} ms",
        wall.as_secs_f64(),
        records as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.5).as_millis(),
        percentile(&lat, 0.99).as_millis()
    );
}

fn heuristic_headings(text: &str) -> Vec<(i64, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("## H-"))
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(id, rule)| id.parse().ok().map(|id| (id, rule.to_string())))
        .collect()
}

fn sync_reports_nothing(home: &Path) {
    let out = run(script("sync-db-markdown.sh", home));
    assert_eq!(
        out.status.code(),
        Some(0),
        "sync-db-markdown.sh found differences:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn load_failures_heuristics_and_readers_on_one_home() {
    let (fw, fr) = (scale(4, 20), scale(5, 50));
    let (hw, hr) = (scale(3, 10), scale(5, 50));
    let readers = scale(4, 20);
    let dir = TempDir::new();
    let home = dir.join("home");
    let mut first = script("record-failure.sh", &home);
    first.args(["--title", "warm up", "--domain", "load"]);
    ok(&run(first));

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader_threads: Vec<_> = (0..readers)
        .map(|i| {
            let (home, stop, reads) = (home.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let modes: [&[&str]; 3] = [&["--context"], &["--domain", "race"], &["--stats"]];
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let mut q = script("query.sh", &home);
                    q.args(modes[i % 3]);
                    let out = run(q);
                    if !out.status.success() {
                        failures.push(String::from_utf8_lossy(&out.stderr).to_string());
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();

    let start = Instant::now();
    let mut writers = Vec::new();
    for w in 0..fw {
        let home = home.clone();
        writers.push(std::thread::spawn(move || {
            (0..fr)
                .map(|r| {
                    let t = Instant::now();
                    let mut c = script("record-failure.sh", &home);
                    c.args(["--title", &format!("load f{w} r{r}"), "--domain", "load"]);
                    let out = run(c);
                    (format!("load f{w} r{r}"), out, t.elapsed())
                })
                .collect::<Vec<_>>()
        }));
    }
    for w in 0..hw {
        let home = home.clone();
        writers.push(std::thread::spawn(move || {
            (0..hr)
                .map(|r| {
                    let t = Instant::now();
                    let mut c = script("record-heuristic.sh", &home);
                    c.args([
                        "--domain",
                        "race",
                        "--rule",
                        &format!("load h{w} r{r}"),
                        "--confidence",
                        "0.5",
                    ]);
                    let out = run(c);
                    (format!("load h{w} r{r}"), out, t.elapsed())
                })
                .collect::<Vec<_>>()
        }));
    }
    let results: Vec<_> = watchdog(Duration::from_secs(3600), move || {
        writers
            .into_iter()
            .flat_map(|t| t.join().expect("writer thread"))
            .collect()
    });
    let wall = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    for t in reader_threads {
        let failures = t.join().expect("reader thread");
        assert!(failures.is_empty(), "query.sh failed: {failures:?}");
    }
    for (name, out, _) in &results {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    report(
        "load",
        results.len(),
        wall,
        results.iter().map(|r| r.2).collect(),
    );
    eprintln!(
        "load: {} query.sh runs alongside",
        reads.load(Ordering::SeqCst)
    );

    // Record by record: one row, one file and one commit per failure.
    let frows = rows(
        &home,
        "SELECT title, filepath FROM learnings WHERE title LIKE 'load f%'",
    );
    let subjects = subjects(&home);
    let by_title: BTreeMap<String, String> = frows
        .iter()
        .map(|r| {
            (
                r["title"].as_str().unwrap_or_default().to_string(),
                r["filepath"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(frows.len(), fw * fr, "failure rows");
    assert_eq!(by_title.len(), fw * fr, "a title has two rows");
    for (title, path) in &by_title {
        let text = std::fs::read_to_string(home.join(path)).unwrap_or_default();
        assert!(
            text.starts_with(&format!("# {title}\n")),
            "{path} is not {title}'s file"
        );
        assert_eq!(
            subjects
                .iter()
                .filter(|s| **s == format!("failure: {title}"))
                .count(),
            1,
            "{title} commits"
        );
    }
    // One header, and the H-<id> set equal to the row id set, rule by rule.
    let text = std::fs::read_to_string(home.join("memory/heuristics/race.md")).expect("race.md");
    assert_eq!(text.matches("# Heuristics: race\n").count(), 1);
    let entries: BTreeSet<(i64, String)> = heuristic_headings(&text).into_iter().collect();
    let hrows: BTreeSet<(i64, String)> = rows(&home, "SELECT id, rule FROM heuristics")
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap_or(0),
                r["rule"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(hrows.len(), hw * hr);
    assert_eq!(entries, hrows);
    for (_, rule) in &hrows {
        assert_eq!(
            subjects
                .iter()
                .filter(|s| **s == format!("heuristic: {rule}"))
                .count(),
            1,
            "{rule} commits"
        );
    }
    assert_db_ok(&home);
    assert_git_ok(&home);
    sync_reports_nothing(&home);
}

#[test]
fn elf_db_many_writers_and_readers() {
    let (writers, per, readers) = (scale(10, 50), scale(20, 50), scale(20, 100));
    let dir = TempDir::new();
    let db = dir.join("db.sqlite");
    let db_bin = env!("CARGO_BIN_EXE_elf-db");
    let made = cmd(db_bin)
        .args(["exec", "--db"])
        .arg(&db)
        .arg("--file")
        .arg(elf_home::root().join("bin-wrappers/lib/schema.sql"))
        .output()
        .expect("schema");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let spawn_writer = |w: usize| -> Child {
        let input: String = (0..per)
            .map(|i| {
                format!(
                    "{{\"db\":{{\"table\":\"learnings\",\"values\":{{\"type\":\"failure\",\"filepath\":\"w{w}/{i}\",\"title\":\"w{w} {i}\"}}}}}}\n"
                )
            })
            .collect();
        let path = dir.join(format!("in.{w}"));
        std::fs::write(&path, input).expect("input");
        cmd(db_bin)
            .args(["insert", "--db"])
            .arg(&db)
            .stdin(std::fs::File::open(&path).expect("open input"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn writer")
    };
    let spawn_reader = || -> Child {
        cmd(db_bin)
            .args(["query", "--db"])
            .arg(&db)
            .arg("SELECT id, title FROM learnings ORDER BY id DESC LIMIT 50")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn reader")
    };
    let start = Instant::now();
    let mut procs: Vec<(String, Child)> = Vec::new();
    for w in 0..writers {
        procs.push((format!("writer {w}"), spawn_writer(w)));
    }
    for r in 0..readers {
        procs.push((format!("reader {r}"), spawn_reader()));
    }
    let outs = watchdog(Duration::from_secs(600), move || {
        procs
            .into_iter()
            .map(|(n, c)| (n, c.wait_with_output().expect("wait")))
            .collect::<Vec<_>>()
    });
    let wall = start.elapsed();
    let mut ids_by_writer: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (name, out) in &outs {
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if name.starts_with("writer") {
            let ids = util::json_lines(&out.stdout)
                .iter()
                .filter_map(|r| r["db"]["id"].as_i64())
                .collect();
            ids_by_writer.insert(name.clone(), ids);
        }
    }
    let out = cmd(db_bin)
        .args(["query", "--db"])
        .arg(&db)
        .arg("SELECT id, filepath FROM learnings")
        .output()
        .expect("count");
    let stored = util::json_lines(&out.stdout);
    assert_eq!(stored.len(), writers * per);
    for (name, ids) in &ids_by_writer {
        assert_eq!(ids.len(), per, "{name} got {} ids", ids.len());
    }
    let by_id: BTreeMap<i64, String> = stored
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap_or(0),
                r["filepath"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (name, ids) in &ids_by_writer {
        let w = name.trim_start_matches("writer ");
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                by_id.get(id).map(String::as_str),
                Some(format!("w{w}/{i}").as_str()),
                "{name} id {id}"
            );
        }
    }
    eprintln!(
        "elf-db: {writers} writers x {per} inserts and {readers} readers in {:.2} s, all succeeded",
        wall.as_secs_f64()
    );
}

/// Every process below `pid`, deepest last.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut all = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm"))
                .unwrap_or_default()
                .trim()
                .to_string();
            all.push((c, comm));
            frontier.push(c);
        }
    }
    all
}

/// Processes whose command line mentions `needle` (orphans of a killed pipeline).
fn mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .filter(|&p| p != me)
                .filter(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains(needle))
                        .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A tiny deterministic generator (xorshift), so a failing run can be repeated by its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// True when a file that readers may see is complete.
fn complete(path: &Path, text: &str) -> bool {
    let name = path.to_string_lossy();
    if name.contains("/memory/failures/") {
        text.ends_with(" -->\n") && text.starts_with("# ")
    } else if name.contains("/memory/heuristics/") {
        text.starts_with("# Heuristics: ") && text.ends_with("---\n\n")
    } else {
        true
    }
}

#[test]
fn chaos_sigkill_at_random_moments() {
    let iterations = scale(24, 500);
    let seed = std::env::var("ELF_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let dir = TempDir::new();
    let home = dir.join("home");
    let mut first = script("record-failure.sh", &home);
    first.args(["--title", "before the storm", "--domain", "chaos"]);
    ok(&run(first));

    // A reader that keeps reading every file and counts any it sees incomplete.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (home, stop) = (home.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut reads, mut torn) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                for sub in ["memory/failures", "memory/heuristics"] {
                    let Ok(dir) = std::fs::read_dir(home.join(sub)) else {
                        continue;
                    };
                    for e in dir.filter_map(|e| e.ok()) {
                        let p: PathBuf = e.path();
                        if p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                        {
                            continue;
                        }
                        if let Ok(text) = std::fs::read_to_string(&p) {
                            reads += 1;
                            if !complete(&p, &text) {
                                torn.push(p.display().to_string());
                            }
                        }
                    }
                }
            }
            (reads, torn)
        })
    };

    let mut rng = Rng(seed);
    let mut started: Vec<(String, bool)> = Vec::new(); // (title or rule, exited 0)
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    let start = Instant::now();
    for i in 0..iterations {
        let heuristic = rng.below(3) == 0;
        let name = format!("chaos {i}");
        let mut c = if heuristic {
            let mut c = script("record-heuristic.sh", &home);
            c.args(["--domain", "chaos", "--rule", &name, "--confidence", "0.5"]);
            c
        } else {
            let mut c = script("record-failure.sh", &home);
            c.args(["--title", &name, "--domain", "chaos"]);
            c
        };
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Aim at one stage: wait until a process of it runs, then kill it a random moment
        // later (it may have finished by then: a miss, counted).
        let stages = ["wrapper", "elf-db", "elf-write", "elf-commit", "elf-lock"];
        let stage = stages[rng.below(stages.len() as u64) as usize];
        let deadline = Instant::now() + Duration::from_secs(5);
        let target = loop {
            if stage == "wrapper" {
                std::thread::sleep(Duration::from_millis(rng.below(400)));
                break Some(child.id());
            }
            // The tools run as the wrapper's children: elf-db (journal, pending, done or the
            // outcome), elf-lock (taking the drain lock), elf-write and elf-commit (the drain).
            let found = descendants(child.id())
                .into_iter()
                .find(|(_, comm)| comm == stage)
                .map(|(pid, _)| pid);
            if let Some(pid) = found {
                std::thread::sleep(Duration::from_micros(rng.below(3_000)));
                break Some(pid);
            }
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                break None;
            }
            std::thread::sleep(Duration::from_micros(50));
        };
        // SAFETY: SIGKILL to a process of the pipeline we started.
        let killed =
            target.is_some_and(|pid| unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0);
        *kills
            .entry(if killed {
                stage.to_string()
            } else {
                format!("{stage} (missed)")
            })
            .or_default() += 1;
        let status = watchdog(Duration::from_secs(120), move || {
            child.wait().expect("wait")
        });
        started.push((
            format!("{}{name}", if heuristic { "h:" } else { "f:" }),
            status.success(),
        ));
    }
    // Orphans of a killed wrapper finish their pipeline on their own; wait for them.
    let needle = home.to_string_lossy().to_string();
    util::wait_for(
        Duration::from_secs(120),
        "orphaned pipeline processes",
        || mentioning(&needle).is_empty(),
    );
    stop.store(true, Ordering::SeqCst);
    let (reads, torn) = reader.join().expect("reader");
    assert!(torn.is_empty(), "a reader saw incomplete files: {torn:?}");

    // The next wrapper call recovers; it must not wait for any lock left behind.
    let t = Instant::now();
    let mut next = script("record-failure.sh", &home);
    next.args(["--title", "after the storm", "--domain", "chaos"]);
    let out = watchdog(Duration::from_secs(60), move || run(next));
    ok(&out);
    let next_took = t.elapsed();

    let subjects = subjects(&home);
    let frows = rows(
        &home,
        "SELECT title, filepath FROM learnings WHERE title LIKE 'chaos %'",
    );
    let ftitles: BTreeMap<String, String> = frows
        .iter()
        .map(|r| {
            (
                r["title"].as_str().unwrap_or_default().to_string(),
                r["filepath"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(ftitles.len(), frows.len(), "a failure has two rows");
    let heuristics_md =
        std::fs::read_to_string(home.join("memory/heuristics/chaos.md")).unwrap_or_default();
    let entries: BTreeSet<(i64, String)> = heuristic_headings(&heuristics_md).into_iter().collect();
    let hrows: BTreeSet<(i64, String)> = rows(&home, "SELECT id, rule FROM heuristics")
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap_or(0),
                r["rule"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(entries, hrows, "heuristic entries and rows differ");
    let (mut whole, mut absent, mut exited_ok) = (0, 0, 0);
    for (tag, success) in &started {
        let (kind, name) = tag.split_at(2);
        let (row, file, commit) = if kind == "f:" {
            let path = ftitles.get(name);
            let file = path.is_some_and(|p| home.join(p).is_file())
                || std::fs::read_dir(home.join("memory/failures"))
                    .map(|d| {
                        d.filter_map(|e| e.ok()).any(|e| {
                            std::fs::read_to_string(e.path())
                                .is_ok_and(|t| t.starts_with(&format!("# {name}\n")))
                        })
                    })
                    .unwrap_or(false);
            (
                path.is_some(),
                file,
                subjects.iter().any(|s| *s == format!("failure: {name}")),
            )
        } else {
            let row = hrows.iter().any(|(_, r)| r == name);
            (
                row,
                row && entries.iter().any(|(_, r)| r == name),
                subjects.iter().any(|s| *s == format!("heuristic: {name}")),
            )
        };
        assert!(
            row == file && file == commit,
            "{tag}: row {row}, file {file}, commit {commit}: neither whole nor absent"
        );
        if row {
            whole += 1;
        } else {
            absent += 1;
        }
        if *success {
            exited_ok += 1;
            assert!(row, "{tag} exited 0 but is not there");
        }
    }
    assert_db_ok(&home);
    assert_git_ok(&home);
    sync_reports_nothing(&home);
    assert!(
        next_took < Duration::from_secs(30),
        "the next run took {next_took:?}"
    );
    eprintln!(
        "chaos (seed {seed:#x}): {iterations} records started in {:.1} s, {exited_ok} exited 0, {whole} whole and {absent} absent after recovery, kills {kills:?}, {reads} reads and no torn file, next run {} ms",
        start.elapsed().as_secs_f64(),
        next_took.as_millis()
    );
}

/// Mutual exclusion through kill -9: workers run `elf-lock L -- sh -c 'PROBE'` while a killer
/// SIGKILLs elf-lock processes at random moments. Each command starts a grandchild that takes
/// a second, non-blocking flock (the probe) for the time it works: the kernel frees the probe
/// when the grandchild dies, whatever killed it, so a probe found taken means two commands'
/// processes ran at once under L. Never, with or without -o.
#[test]
fn elf_lock_kill_9_never_lets_two_commands_run_at_once() {
    let (workers, per) = (scale(4, 8), scale(15, 60));
    let dir = TempDir::new();
    let lock = dir.join("L");
    let probe = dir.join("probe");
    let log = dir.join("log");
    let lock_bin = env!("CARGO_BIN_EXE_elf-lock");
    let running: Arc<std::sync::Mutex<Vec<u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (running, stop, killed) = (running.clone(), stop.clone(), killed.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(0x10c4);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5 + rng.below(20)));
                let pids = running.lock().map(|v| v.clone()).unwrap_or_default();
                if pids.is_empty() {
                    continue;
                }
                let pid = pids[rng.below(pids.len() as u64) as usize];
                // SAFETY: kill(2) with a pid of a child we spawned; a pid already reaped is
                // at worst not ours any more, which the short window makes unlikely and which
                // harms no invariant checked here.
                if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                    killed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let (lock, probe, log, running) =
                (lock.clone(), probe.clone(), log.clone(), running.clone());
            std::thread::spawn(move || {
                for i in 0..per {
                    let mut c = cmd(lock_bin);
                    if (w + i) % 2 == 0 {
                        c.arg("-o");
                    }
                    // The grandchild holds the probe while it "works"; a taken probe is logged.
                    let body = format!(
                        "flock -n {probe} sh -c 'echo in >> {log}; sleep 0.03; echo out >> {log}' || echo OVERLAP >> {log}",
                        probe = probe.display(),
                        log = log.display()
                    );
                    let mut child = c
                        .arg("-w")
                        .arg("60")
                        .arg(&lock)
                        .args(["--", "sh", "-c", &body])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn elf-lock");
                    let pid = child.id();
                    if let Ok(mut v) = running.lock() {
                        v.push(pid);
                    }
                    let _ = child.wait();
                    if let Ok(mut v) = running.lock() {
                        v.retain(|p| *p != pid);
                    }
                }
            })
        })
        .collect();
    watchdog(Duration::from_secs(600), move || {
        for t in threads {
            t.join().expect("worker");
        }
    });
    stop.store(true, Ordering::SeqCst);
    killer.join().expect("killer");
    // The last commands' processes (grandchildren of killed runs included) hold L, or the -o
    // keeper does, until they are gone; the probe is held by a grandchild at work. Once both
    // are taken here, nothing is left to write to the log.
    let quiet = cmd(lock_bin)
        .args(["-w", "60"])
        .arg(&lock)
        .args(["flock", "-w", "60"])
        .arg(&probe)
        .arg("true")
        .status()
        .expect("elf-lock");
    assert!(quiet.success(), "the lock or the probe stayed held");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let entered = text.lines().filter(|l| *l == "in").count();
    eprintln!(
        "elf-lock under kill -9: {} commands, {} kills, {entered} entered",
        workers * per,
        killed.load(Ordering::SeqCst)
    );
    assert!(entered > 0, "no command ever ran");
    assert!(
        !text.contains("OVERLAP"),
        "two commands ran at once:\n{text}"
    );
}

/// Several elf-commit runs at once in one repository whose .gitattributes gives some paths a
/// clean filter: every record of a filtered path is refused (69, an error record), every other
/// record gets its commit, and no commit ever holds a filtered path.
#[test]
fn concurrent_commits_with_filtered_paths() {
    let (writers, per) = (scale(4, 10), scale(5, 20));
    let dir = TempDir::new();
    let repo = dir.join("repo");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&["init", "-q"]);
    git(&["config", "user.name", "T"]);
    git(&["config", "user.email", "t@example.com"]);
    git(&["config", "filter.up.clean", "tr a-z A-Z"]);
    git(&["config", "filter.up.smudge", "cat"]);
    std::fs::write(repo.join(".gitattributes"), "*.up filter=up\n").expect("write");
    git(&["add", ".gitattributes"]);
    git(&["commit", "-qm", "attributes"]);
    let commit_bin = env!("CARGO_BIN_EXE_elf-commit");
    let children: Vec<_> = (0..writers)
        .map(|w| {
            let mut input = String::new();
            for i in 0..per {
                let ext = if i % 2 == 0 { "md" } else { "up" };
                let path = format!("w{w}-{i}.{ext}");
                std::fs::write(repo.join(&path), format!("text {w} {i}\n")).expect("write");
                input.push_str(&format!(
                    "{{\"commit\":{{\"paths\":[\"{path}\"],\"message\":\"{path}\"}}}}\n"
                ));
            }
            let file = dir.join(format!("in.{w}"));
            std::fs::write(&file, input).expect("input");
            cmd(commit_bin)
                .args(["--keep-going", "--repo"])
                .arg(&repo)
                .stdin(std::fs::File::open(&file).expect("open"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn elf-commit")
        })
        .collect();
    let mut refused = 0;
    for child in children {
        let out = child.wait_with_output().expect("elf-commit");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a record");
            let path = v["commit"]["paths"][0].as_str().unwrap_or("").to_string();
            if path.ends_with(".up") {
                assert_eq!(v["error"]["code"], 69, "{line}");
                refused += 1;
            } else {
                assert!(v.get("error").is_none(), "{line}");
            }
        }
    }
    assert_eq!(refused, writers * (per / 2));
    let subjects = git(&["log", "--format=%s"]);
    for w in 0..writers {
        for i in 0..per {
            let ext = if i % 2 == 0 { "md" } else { "up" };
            let path = format!("w{w}-{i}.{ext}");
            let n = subjects.lines().filter(|s| *s == path).count();
            assert_eq!(n, usize::from(ext == "md"), "{path}: {subjects}");
        }
    }
    let all = git(&["log", "--name-only", "--format="]);
    assert!(!all.contains(".up"), "a filtered path was committed: {all}");
    git(&["fsck", "--no-progress"]);
    let status = git(&["status", "--porcelain"]);
    assert!(
        status
            .lines()
            .all(|l| l.starts_with("?? ") && l.ends_with(".up")),
        "{status}"
    );
}

/// Three machines sharing one home through a remote, each with writers racing their pushes
/// (failures with the same titles and heuristics on the same domains on every machine), then
/// one final sync per machine: every record exactly once in the remote's history and
/// markdown, every H-<id> unique and its row's id on every machine, every index complete,
/// sync clean and git fsck clean everywhere.
fn machines_racing_their_pushes(daemon: bool) {
    let machines = 3;
    let writers = scale(2, 5);
    let per = scale(2, 10);
    let s = remote_net::shared(machines, daemon);
    let started = Instant::now();
    let mut threads = Vec::new();
    for (m, home) in s.machines.iter().enumerate() {
        for w in 0..writers {
            let home = home.clone();
            threads.push(std::thread::spawn(move || {
                let mut lat = Vec::new();
                for i in 0..per {
                    let t = Instant::now();
                    let o = if i % 2 == 0 {
                        remote_net::failure(&home, &format!("failure {w} {i}"))
                    } else {
                        remote_net::heuristic(
                            &home,
                            &format!("domain-{}", i % 3),
                            &format!("rule {m} {w} {i}"),
                        )
                    };
                    ok(&o);
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
    }
    let lat: Vec<Duration> = watchdog(Duration::from_secs(1800), move || {
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("writer"))
            .collect()
    });
    let records = machines * writers * per;
    report(
        &format!(
            "{machines} machines sharing a remote{}",
            if daemon { " (git daemon)" } else { "" }
        ),
        records,
        started.elapsed(),
        lat,
    );
    remote_net::assert_converged(&s);
    let log = elf_home::git(&s.bare(), &["log", "--format=%s", "main"]);
    let entries = remote_net::remote_entries(&s);
    for m in 0..machines {
        for w in 0..writers {
            for i in (1..per).step_by(2) {
                let rule = format!("rule {m} {w} {i}");
                assert_eq!(entries.iter().filter(|e| e.1 == rule).count(), 1, "{rule}");
                let subject = format!("heuristic: {rule}");
                assert_eq!(
                    log.lines().filter(|l| *l == subject).count(),
                    1,
                    "{subject}"
                );
            }
        }
    }
    for w in 0..writers {
        for i in (0..per).step_by(2) {
            let subject = format!("failure: failure {w} {i}");
            assert_eq!(
                log.lines().filter(|l| *l == subject).count(),
                machines,
                "{subject}"
            );
        }
    }
    let files = elf_home::git(
        &s.bare(),
        &["ls-tree", "--name-only", "main", "memory/failures/"],
    );
    assert_eq!(files.lines().count(), machines * writers * per.div_ceil(2));
}

#[test]
fn three_machines_racing_their_pushes_over_file_url() {
    machines_racing_their_pushes(false);
}

#[test]
fn three_machines_racing_their_pushes_over_git_daemon() {
    machines_racing_their_pushes(true);
}
