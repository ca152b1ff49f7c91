//! elf-backoff: flags, schedules, replayed input, held output, budgets, signals, broken pipes.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{TempDir, cmd, json_lines, ok, one_line, run_with_input, wait_for, watchdog};

fn backoff() -> Command {
    cmd(env!("CARGO_BIN_EXE_elf-backoff"))
}

#[test]
fn bad_flag_values_are_usage_errors_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["-n", "0", "--", "true"], "--attempts"),
        (&["--attempts", "x", "--", "true"], "--attempts"),
        (&["--base", "-1", "--", "true"], "--base"),
        (&["--base", "1w", "--", "true"], "--base"),
        (&["--max-delay", "", "--", "true"], "--max-delay"),
        (&["--max-time", "soon", "--", "true"], "--max-time"),
        (&["--jitter", "some", "--", "true"], "--jitter"),
        (&["--retry-on", "0", "--", "true"], "--retry-on"),
        (&["--retry-on", "3-1", "--", "true"], "--retry-on"),
        (&["--retry-on", "1,,2", "--", "true"], "--retry-on"),
        (&["--seed", "-4", "--", "true"], "--seed"),
        (&["--attempts"], "--attempts"),
        (&[], "no command"),
        (&["--schedule", "--", "true"], "--schedule"),
    ];
    for (args, needle) in cases {
        let out = backoff().args(*args).output().expect("run");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let line = one_line(&out.stderr);
        assert!(line.starts_with("elf-backoff: "), "{line}");
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

fn schedule(args: &[&str]) -> Vec<u64> {
    let out = backoff()
        .arg("--schedule")
        .args(args)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out.stdout)
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            assert_eq!(rec.len(), 2, "{rec:?}");
            assert_eq!(rec["attempt"].as_u64(), Some(i as u64 + 2));
            rec["delay_ms"].as_u64().expect("delay_ms is an integer")
        })
        .collect()
}

#[test]
fn seeded_schedules_are_reproducible_and_within_their_formulas() {
    let (base, cap) = (50u64, 3_000u64);
    for jitter in ["full", "equal", "decorrelated", "none"] {
        for seed in ["1", "2", "99"] {
            let args = [
                "-n",
                "30",
                "--base",
                "50ms",
                "--max-delay",
                "3s",
                "--jitter",
                jitter,
                "--seed",
                seed,
            ];
            let a = schedule(&args);
            assert_eq!(a, schedule(&args), "{jitter} seed {seed} not reproducible");
            assert_eq!(a.len(), 29);
            let mut prev = base;
            for (n, &d) in a.iter().enumerate() {
                let t = base.saturating_mul(1u64 << n.min(40)).min(cap);
                // Delays are printed in whole milliseconds (rounded down).
                let (lo, hi) = match jitter {
                    "full" => (0, t),
                    "equal" => (t / 2 - 1, t),
                    "decorrelated" => (base, (prev * 3 + 1).min(cap)),
                    _ => (t, t),
                };
                assert!(
                    lo <= d && d <= hi,
                    "{jitter} seed {seed} n {n}: {d} not in [{lo}, {hi}]"
                );
                assert!(d <= cap);
                prev = d.max(1);
            }
        }
    }
    let other = schedule(&["-n", "30", "--seed", "3"]);
    assert_ne!(other, schedule(&["-n", "30", "--seed", "4"]));
}

#[test]
fn max_time_ends_the_schedule() {
    // none: 100, 200, 400, 800 -> the fourth pause would end at 1.5 s, past a 1.2 s budget.
    assert_eq!(
        schedule(&["-n", "10", "--jitter", "none", "--max-time", "1.2s"]),
        [100, 200, 400]
    );
}

#[test]
fn large_durations_are_used_as_given_or_refused_naming_the_maximum() {
    // The doubling once stopped at 2^31 times the base: 1 ms grew no further than 2^31 ms
    // under a 10^9 s cap.
    let d = schedule(&[
        "-n",
        "45",
        "--jitter",
        "none",
        "--base",
        "1ms",
        "--max-delay",
        "1000000000s",
    ]);
    let want: Vec<u64> = (0..44)
        .map(|n| (1u64 << n).min(1_000_000_000_000))
        .collect();
    assert_eq!(d, want);
    // A budget of 10^12 s cuts nothing short.
    let d = schedule(&[
        "-n",
        "45",
        "--jitter",
        "none",
        "--base",
        "1ms",
        "--max-delay",
        "1000000000s",
        "--max-time",
        "1000000000000s",
    ]);
    assert_eq!(d, want);
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--max-delay", "18446744074s"], "--max-delay", "584 years"),
        (&["--base", "20000000000"], "--base", "584 years"),
        (
            &["--max-time", "99999999999999999999s"],
            "--max-time",
            "under 2^64 seconds",
        ),
    ];
    for (args, flag, max) in cases {
        let out = backoff()
            .arg("--schedule")
            .args(*args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let line = one_line(&out.stderr);
        assert!(
            line.contains(flag) && line.contains(max),
            "{args:?}: {line}"
        );
    }
}

/// A command that counts its attempts in `dir/count`, saves its stdin as `dir/in.N`, prints
/// "attempt N" and fails with `status` until attempt `ok_at`.
fn counting(dir: &TempDir, status: u8, ok_at: u32) -> Vec<String> {
    let script = format!(
        "cd '{}' && n=$(( $(cat count 2>/dev/null || echo 0) + 1 )) && echo $n > count && \
         cat > in.$n && echo \"attempt $n\" && [ $n -ge {ok_at} ] || exit {status}",
        dir.path().display()
    );
    vec!["sh".into(), "-c".into(), script]
}

fn count(dir: &TempDir) -> u32 {
    std::fs::read_to_string(dir.join("count"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn every_attempt_gets_the_same_stdin_and_only_the_last_output_appears() {
    for size in [5usize, 3 << 20] {
        let dir = TempDir::new();
        let input: Vec<u8> = (0..size).map(|i| b"INSERT 42;\n"[i % 11]).collect();
        let mut c = backoff();
        c.args(["-q", "--base", "1ms"])
            .arg("--")
            .args(counting(&dir, 75, 3));
        let out = run_with_input(c, &input);
        ok(&out);
        assert_eq!(count(&dir), 3);
        for n in 1..=3 {
            let got = std::fs::read(dir.join(format!("in.{n}"))).expect("saved stdin");
            assert!(
                got == input,
                "attempt {n} got {} bytes, not the {} sent",
                got.len(),
                input.len()
            );
        }
        assert_eq!(String::from_utf8_lossy(&out.stdout), "attempt 3\n");
        assert!(
            out.stderr.is_empty(),
            "-q printed {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn retries_are_announced_one_line_each() {
    let dir = TempDir::new();
    let out = backoff()
        .args(["--base", "1ms", "--seed", "5"])
        .arg("--")
        .args(counting(&dir, 75, 2))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with("elf-backoff: attempt 1/5 exited with status 75; retrying in "),
        "{line}"
    );
}

#[test]
fn a_status_not_in_retry_on_is_returned_at_once() {
    let dir = TempDir::new();
    let out = backoff()
        .args(["--base", "1ms", "--"])
        .args(counting(&dir, 3, 9))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(count(&dir), 1);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attempt 1\n");

    let dir = TempDir::new();
    let out = backoff()
        .args([
            "-q",
            "--base",
            "1ms",
            "--retry-on",
            "1-3,75",
            "-n",
            "4",
            "--",
        ])
        .args(counting(&dir, 3, 9))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "the last attempt's status");
    assert_eq!(count(&dir), 4);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attempt 4\n");
}

#[test]
fn a_command_killed_by_a_signal_gives_128_plus_n() {
    let out = backoff()
        .args(["-q", "--", "sh", "-c", "kill -9 $$"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(137));
    let out = backoff()
        .args([
            "-q",
            "--retry-on",
            "137",
            "-n",
            "2",
            "--base",
            "1ms",
            "--",
            "sh",
            "-c",
            "kill -9 $$",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(137));
}

#[test]
fn max_time_stops_new_attempts_on_a_fake_clock() {
    // Attempts take no time on the fake clock; none-jitter pauses are 300, 600, 1200 ms, so
    // attempts start at 0, 0.3 and 0.9 s and the fourth (2.1 s) would be past 1 s.
    let dir = TempDir::new();
    let out = backoff()
        .env("ELF_FAKE_CLOCK", "1")
        .args([
            "-n",
            "10",
            "--jitter",
            "none",
            "--base",
            "300ms",
            "--max-time",
            "1s",
            "--",
        ])
        .args(counting(&dir, 75, 99))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(count(&dir), 3);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attempt 3\n");
    let last = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        last,
        "elf-backoff: attempt 3/10 exited with status 75; giving up: the next attempt would \
         start past --max-time (1.000s in all; 900ms spent)"
    );
}

#[test]
fn giving_up_says_why_in_one_line_unless_quiet() {
    // Out of attempts: the last failed attempt's status, and why there is no other.
    for quiet in [false, true] {
        let dir = TempDir::new();
        let mut c = backoff();
        c.env("ELF_FAKE_CLOCK", "1")
            .args(["-n", "3", "--jitter", "none", "--base", "1ms"]);
        if quiet {
            c.arg("-q");
        }
        let out = c
            .arg("--")
            .args(counting(&dir, 75, 99))
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(75));
        assert_eq!(count(&dir), 3);
        let err = String::from_utf8_lossy(&out.stderr);
        if quiet {
            assert_eq!(err, "");
        } else {
            assert_eq!(
                err.lines().last(),
                Some(
                    "elf-backoff: attempt 3/3 exited with status 75; giving up: no attempt left \
                     (--attempts 3)"
                ),
                "{err}"
            );
            assert_eq!(err.matches("giving up").count(), 1, "{err}");
        }
    }
    // A status not to retry ends the run without a word: nothing was given up.
    let out = backoff()
        .args(["-n", "3", "--", "sh", "-c", "exit 3"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn signals_are_forwarded_and_stop_the_retries() {
    let dir = TempDir::new();
    let script = format!(
        "cd '{}' && echo x >> attempts && trap 'echo term > got; exit 75' TERM && touch ready && \
         while :; do sleep 0.01; done",
        dir.path().display()
    );
    let mut child = backoff()
        .args(["-q", "-n", "5", "--base", "1ms", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for(Duration::from_secs(20), "the command to start", || {
        dir.join("ready").exists()
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = watchdog(Duration::from_secs(20), move || child.wait().expect("wait"));
    assert_eq!(status.code(), Some(75), "the forwarded attempt's status");
    assert_eq!(
        std::fs::read_to_string(dir.join("got")).unwrap_or_default(),
        "term\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("attempts")).unwrap_or_default(),
        "x\n",
        "no retry after the signal"
    );
}

#[test]
fn sigint_during_a_wait_gives_130() {
    let dir = TempDir::new();
    let script = format!("cd '{}' && touch failed && exit 75", dir.path().display());
    let mut child = backoff()
        .args([
            "-q", "--jitter", "none", "--base", "60s", "--", "sh", "-c", &script,
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    // The attempt has failed and been reaped: elf-backoff is waiting (or about to).
    let pid = child.id();
    wait_for(Duration::from_secs(20), "the first attempt to end", || {
        dir.join("failed").exists()
            && std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .is_ok_and(|c| c.trim().is_empty())
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = watchdog(Duration::from_secs(20), move || child.wait().expect("wait"));
    assert_eq!(status.code(), Some(130));
}

#[test]
fn a_closed_output_pipe_gives_141_silently() {
    let mut child = backoff()
        .args(["--", "sh", "-c", "seq 1 200000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = watchdog(Duration::from_secs(20), move || {
        child.wait_with_output().expect("wait")
    });
    assert_eq!(out.status.code(), Some(141));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_and_unrunnable_commands_give_127_and_126() {
    let out = backoff()
        .args(["--", "/no/such/command"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        one_line(&out.stderr),
        "elf-backoff: cannot run /no/such/command: No such file or directory"
    );
    let dir = TempDir::new();
    let out = backoff().arg("--").arg(dir.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(126));
}

/// The succeeding attempt's output comes out whole (3 MiB, after a failed attempt that printed
/// too), and a background process the command leaves behind holding its standard output does
/// not keep elf-backoff waiting.
#[test]
fn held_output_comes_out_whole_and_a_leftover_background_process_does_not_hold_the_run() {
    let dir = TempDir::new();
    let counter = dir.join("n");
    let sleeper = dir.join("sleeper");
    // The background process outlives any deadline the run could meet (it is killed below);
    // with output read from a pipe, elf-backoff would wait for it and the watchdog would fire.
    let script = format!(
        "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '{c}'; \
         if [ $n -lt 2 ]; then echo failed; exit 75; fi; \
         head -c 3145728 /dev/zero | tr '\\0' x; sleep 600 2>/dev/null & echo $! > '{s}'; exit 0",
        c = counter.display(),
        s = sleeper.display()
    );
    let out = watchdog(Duration::from_secs(60), move || {
        let mut c = backoff();
        c.args(["-q", "--base", "1ms", "--", "sh", "-c", &script])
            .stdin(Stdio::null());
        c.output().expect("run")
    });
    if let Ok(pid) = std::fs::read_to_string(&sleeper) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    ok(&out);
    assert_eq!(out.stdout.len(), 3 << 20);
    assert!(out.stdout.iter().all(|&b| b == b'x'));
}

/// `elf-backoff -- yes | head` once filled the file system with held output. What is held is
/// bounded by --hold: here under a file size limit of 2 MiB (dash counts `ulimit -f` in 512-byte
/// blocks, bash in 1024), which kills any process that writes a file past it, yet more than
/// that much output arrives; and when the reader goes, the command is stopped and the run ends
/// with 141.
#[test]
fn held_output_is_bounded_and_a_reader_that_goes_stops_the_command() {
    use std::io::Read;
    let dir = TempDir::new();
    let script = format!(
        "ulimit -f 4096 && exec '{}' --hold 2M -- yes",
        env!("CARGO_BIN_EXE_elf-backoff")
    );
    let mut child = cmd("sh")
        .args(["-c", &script])
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let got = watchdog(Duration::from_secs(60), move || {
        let mut got = vec![0u8; 5 << 20];
        stdout.read_exact(&mut got).expect("5 MiB of output");
        got
    });
    assert!(got.chunks(2).all(|c| c == b"y\n"), "not yes's output");
    let out = watchdog(Duration::from_secs(60), move || {
        child.wait_with_output().expect("wait")
    });
    assert_eq!(out.status.code(), Some(141));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command that prints `bytes` bytes and exits 75 until attempt `ok_at`, counting attempts.
fn printing(dir: &TempDir, bytes: usize, ok_at: u32) -> Vec<String> {
    let script = format!(
        "cd '{}' && n=$(( $(cat count 2>/dev/null || echo 0) + 1 )) && echo $n > count && \
         head -c {bytes} /dev/zero | tr '\\0' $n && [ $n -ge {ok_at} ] || exit 75",
        dir.path().display()
    );
    vec!["sh".into(), "-c".into(), script]
}

#[test]
fn output_past_hold_is_passed_on_and_ends_the_run() {
    // Past the limit: passed on, not retried, one line says why.
    let dir = TempDir::new();
    let out = backoff()
        .args(["--hold", "64K", "-n", "3", "--base", "1ms", "--"])
        .args(printing(&dir, 100_000, 9))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(count(&dir), 1);
    assert_eq!(out.stdout.len(), 100_000);
    assert!(out.stdout.iter().all(|&b| b == b'1'));
    let line = one_line(&out.stderr);
    assert_eq!(
        line,
        "elf-backoff: attempt 1/3 exited with status 75; giving up: its output grew past \
         --hold (64K) and was passed on as it came"
    );
    // Within it: held, and only the last attempt's output appears.
    let dir = TempDir::new();
    let out = backoff()
        .args(["-q", "--hold", "64K", "-n", "3", "--base", "1ms", "--"])
        .args(printing(&dir, 65_536, 3))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    ok(&out);
    assert_eq!(count(&dir), 3);
    assert_eq!(out.stdout.len(), 65_536);
    assert!(out.stdout.iter().all(|&b| b == b'3'));
    // --hold 0: retried only while nothing was written.
    let dir = TempDir::new();
    let out = backoff()
        .args(["-q", "--hold", "0", "--base", "1ms", "--"])
        .args(printing(&dir, 1, 3))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(75));
    assert_eq!((count(&dir), out.stdout.as_slice()), (1, &b"1"[..]));
    let out = backoff()
        .args(["--hold", "1M", "--stream", "--", "true"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).contains("--hold"));
    let out = backoff()
        .args(["--hold", "1.5M", "--", "true"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(one_line(&out.stderr).contains("--hold"));
}

/// A reader that has gone is noticed before a retry: no attempt runs for nobody, held or not.
#[test]
fn no_retry_once_the_reader_has_gone() {
    for stream in [false, true] {
        let dir = TempDir::new();
        let script = format!(
            "cd '{}' && echo x >> attempts && if [ -n \"$STREAM\" ]; then exec yes; fi; \
             echo out; exit 3",
            dir.path().display()
        );
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut c = backoff();
        c.args(["-q", "--retry-on", "any", "-n", "50", "--base", "1ms"]);
        if stream {
            c.arg("--stream").env("STREAM", "1");
        }
        c.args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(writer);
        let out = watchdog(Duration::from_secs(60), move || c.output().expect("run"));
        assert_eq!(out.status.code(), Some(141), "stream {stream}");
        assert_eq!(
            std::fs::read_to_string(dir.join("attempts")).unwrap_or_default(),
            "x\n",
            "stream {stream}: retried for nobody"
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
