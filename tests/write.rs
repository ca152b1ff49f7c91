//! elf-write: record and stream forms, root confinement, atomic visibility under readers and
//! kill -9, racing appends and unique creates, disk full, locks.

use std::borrow::BorrowMut;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{
    TempDir, cmd, json_lines, ok, one_line, run_with_input, scale, skip_unless_root, wait_for,
    watchdog,
};

const BIN: &str = env!("CARGO_BIN_EXE_elf-write");

/// `elf-write --root ROOT`.
fn ew(root: &Path) -> Command {
    let mut c = cmd(BIN);
    c.arg("--root").arg(root);
    c
}

fn lines(records: &[Value]) -> Vec<u8> {
    let mut s = String::new();
    for r in records {
        s.push_str(&r.to_string());
        s.push('\n');
    }
    s.into_bytes()
}

fn run_records(
    c: impl BorrowMut<Command>,
    records: &[Value],
) -> (Option<i32>, Vec<serde_json::Map<String, Value>>, String) {
    let out = run_with_input(c, &lines(records));
    (
        out.status.code(),
        json_lines(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The names of elf-write temporary files in `dir`.
fn temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".elf-write."))
                .collect()
        })
        .unwrap_or_default()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn records_get_results_and_keep_every_other_key_in_order() {
    let t = TempDir::new();
    let input =
        br#"{"z":1,"write":{"path":"./m//a.md","content":"x\n","extra":true},"key":"k","a":[1]}
{"error":{"tool":"elf-db","code":65},"write":{"path":"../escape","content":"x"}}
{"other":true}
{"write":null}
"#;
    let out = run_with_input(ew(t.path()), input);
    ok(&out);
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 4);
    let keys: Vec<&str> = recs[0].keys().map(String::as_str).collect();
    assert_eq!(keys, ["z", "write", "key", "a"]);
    let w = &recs[0]["write"];
    let wkeys: Vec<&str> = w
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(wkeys, ["path", "content", "extra", "bytes", "created"]);
    assert_eq!(w["path"], "m/a.md");
    assert_eq!(w["bytes"], 2);
    assert_eq!(w["created"], true);
    assert_eq!(fs::read(t.join("m/a.md")).expect("written"), b"x\n");
    // A record with an error, without write, or with a null write is passed on untouched.
    let originals: Vec<Value> = std::str::from_utf8(input)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    for i in 1..4 {
        assert_eq!(Value::Object(recs[i].clone()), originals[i]);
    }
    assert!(!t.path().parent().expect("parent").join("escape").exists());
}

#[test]
fn replaying_a_record_is_a_no_op() {
    let t = TempDir::new();
    let recs = [json!({"key":"k1","write":[
            {"path":"r.md","content":"replace\n"},
            {"path":"c.md","mode":"create","content":"create\n"},
            {"path":"u.md","mode":"create","unique":true,"content":"unique\n"},
            {"path":"a.md","mode":"append","header":"# A\n\n","content":"entry\n"}]})];
    let (code, first, err) = run_records(ew(t.path()), &recs);
    assert_eq!(code, Some(0), "{err}");
    for w in first[0]["write"].as_array().expect("array") {
        assert_eq!(w["created"], true, "{w}");
    }
    let before: Vec<(String, Vec<u8>)> = listing(t.path())
        .into_iter()
        .map(|n| {
            let p = t.join(&n);
            // Make any rewrite visible through the modification time.
            let ok = Command::new("touch")
                .args(["-d", "@946684800"])
                .arg(&p)
                .status()
                .expect("touch");
            assert!(ok.success());
            (n, fs::read(&p).expect("read"))
        })
        .collect();
    let (code, second, err) = run_records(ew(t.path()), &recs);
    assert_eq!(code, Some(0), "{err}");
    let ws = second[0]["write"].as_array().expect("array");
    for w in ws {
        assert_eq!(w["created"], false, "{w}");
    }
    assert_eq!(ws[2]["path"], "u.md");
    assert_eq!(ws[3]["header_written"], false);
    for (n, data) in &before {
        let p = t.join(n);
        assert_eq!(&fs::read(&p).expect("read"), data, "{n} changed");
        assert_eq!(
            fs::metadata(&p).expect("meta").mtime(),
            946_684_800,
            "{n} rewritten"
        );
    }
    assert_eq!(
        fs::read_to_string(t.join("a.md")).expect("a"),
        "# A\n\n<!-- elf:k1 3 -->\nentry\n"
    );
}

#[test]
fn appends_without_a_key_are_not_idempotent_and_keys_are_checked() {
    let t = TempDir::new();
    let rec = json!({"write":{"path":"log","mode":"append","content":"line\n"}});
    for _ in 0..2 {
        let (code, _, err) = run_records(ew(t.path()), std::slice::from_ref(&rec));
        assert_eq!(code, Some(0), "{err}");
    }
    assert_eq!(
        fs::read_to_string(t.join("log")).expect("log"),
        "line\nline\n"
    );
    // A file without a final newline gets one before the marker.
    fs::write(t.join("nl"), "no newline").expect("write");
    let rec = json!({"key":"k","write":{"path":"nl","mode":"append","content":"x\n"}});
    let (code, _, _) = run_records(ew(t.path()), &[rec]);
    assert_eq!(code, Some(0));
    assert_eq!(
        fs::read_to_string(t.join("nl")).expect("nl"),
        "no newline\n<!-- elf:k -->\nx\n"
    );
    let rec = json!({"key":7,"write":{"path":"nl","mode":"append","content":"x\n"}});
    let (code, _, err) = run_records(ew(t.path()), &[rec]);
    assert_eq!(code, Some(65));
    assert_eq!(
        err,
        "elf-write: line 1: \"key\" must be a string, found a number\n"
    );
}

#[test]
fn two_appends_of_one_record_to_one_file_are_two_entries_once() {
    let t = TempDir::new();
    let rec = json!({"key":"k","write":[
        {"path":"log.md","mode":"append","header":"# Log\n","content":"first\n"},
        {"path":"log.md","mode":"append","header":"# Log\n","content":"second\n"}]});
    for created in [true, false] {
        let (code, recs, err) = run_records(ew(t.path()), std::slice::from_ref(&rec));
        assert_eq!(code, Some(0), "{err}");
        for w in recs[0]["write"].as_array().expect("array") {
            assert_eq!(w["created"], created);
        }
    }
    assert_eq!(
        fs::read_to_string(t.join("log.md")).expect("log"),
        "# Log\n<!-- elf:k 0 -->\nfirst\n<!-- elf:k 1 -->\nsecond\n"
    );
}

/// References in a write object are resolved against the record before the write, and stay
/// in the record as written (but `path`, which becomes the final path); a bad one is a bad
/// record naming the line and the pointer, and nothing of its record is written.
#[test]
fn references_are_resolved_before_writing_and_stay_as_written() {
    let t = TempDir::new();
    let content = json!({"$join":["## H-",{"$ref":"/db/id"},": ",{"$ref":"/title"},"\n"]});
    let path = json!({"$join":["h/",{"$ref":"/domain"},".md"]});
    let rec = json!({"key":"k","db":{"id":42},"title":"rule","domain":"testing",
        "write":[{"path":path,"mode":"append","header":"# H\n","content":content},
                 {"path":{"$ref":"/file"},"content":{"$ref":"/title"}}],
        "file":"plain.md"});
    let (code, recs, err) = run_records(ew(t.path()), std::slice::from_ref(&rec));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        fs::read_to_string(t.join("h/testing.md")).expect("read"),
        "# H\n<!-- elf:k 0 -->\n## H-42: rule\n"
    );
    assert_eq!(
        fs::read_to_string(t.join("plain.md")).expect("read"),
        "rule"
    );
    let ws = recs[0]["write"].as_array().expect("array");
    assert_eq!(ws[0]["path"], "h/testing.md");
    assert_eq!(ws[0]["content"], content);
    assert_eq!(ws[0]["bytes"], 14);
    assert_eq!(ws[1]["path"], "plain.md");
    assert_eq!(ws[1]["content"], json!({"$ref":"/title"}));

    // A reference that names nothing: 65, the line and the pointer; nothing written.
    let bad = json!({"key":"b","write":[{"path":"first.md","content":"x"},
        {"path":"second.md","content":{"$ref":"/db/id"}}]});
    let good = json!({"write":{"path":"after.md","content":"y"}});
    let input = lines(&[
        json!({"write":{"path":"before.md","content":"z"}}),
        bad,
        good,
    ]);
    let out = run_with_input(ew(t.path()), &input);
    assert_eq!(out.status.code(), Some(65));
    assert_eq!(
        one_line(&out.stderr),
        "elf-write: line 2: write: reference \"/db/id\" resolves to nothing in the record"
    );
    assert!(t.join("before.md").exists());
    assert!(!t.join("first.md").exists() && !t.join("after.md").exists());
    let out = run_with_input(ew(t.path()).arg("--keep-going"), &input);
    assert_eq!(out.status.code(), Some(0));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs[1]["error"]["code"], 65);
    assert_eq!(recs[1]["error"]["line"], 2);
    assert!(!t.join("first.md").exists() && t.join("after.md").exists());

    // The write object itself is not a reference: the results would have nowhere to go.
    for w in [
        json!({"$ref":"/w"}),
        json!([{"path":"a","content":"a"},{"$ref":"/w"}]),
    ] {
        let rec = json!({"w":{"path":"w.md","content":"w"},"write":w});
        let (code, _, err) = run_records(ew(t.path()), &[rec]);
        assert_eq!(code, Some(65), "{err}");
        assert!(err.contains("not a reference"), "{err}");
    }
    assert!(!t.join("w.md").exists() && !t.join("a").exists());
}

/// `end`: the size of the file's prefix that ends with the record's entry, found again on a
/// replay, left out when the marker is followed by other content.
#[test]
fn appends_report_where_their_entry_ends() {
    let t = TempDir::new();
    let recs: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|k| {
            json!({"key":k,"write":{"path":"h.md","mode":"append","header":"# H\n\n",
            "content":format!("entry {k}\n")}})
        })
        .collect();
    let (code, first, err) = run_records(ew(t.path()), &recs);
    assert_eq!(code, Some(0), "{err}");
    let text = fs::read_to_string(t.join("h.md")).expect("read");
    let ends: Vec<u64> = first
        .iter()
        .map(|r| r["write"]["end"].as_u64().expect("end"))
        .collect();
    let expected: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|k| {
            let entry = format!("<!-- elf:{k} -->\nentry {k}\n");
            (text.find(&entry).expect("entry") + entry.len()) as u64
        })
        .collect();
    assert_eq!(ends, expected);
    assert_eq!(ends[2], text.len() as u64);
    assert_eq!(ends[0], "# H\n\n<!-- elf:a -->\nentry a\n".len() as u64);
    // A replay, one record at a time and all at once, finds the same ends.
    let (_, again, _) = run_records(ew(t.path()), &recs[1..2]);
    assert_eq!(again[0]["write"]["end"], ends[1]);
    assert_eq!(again[0]["write"]["created"], false);
    let (_, again, _) = run_records(ew(t.path()), &recs);
    let replayed: Vec<Value> = again.iter().map(|r| r["write"]["end"].clone()).collect();
    assert_eq!(replayed, ends.iter().map(|e| json!(e)).collect::<Vec<_>>());
    // The same key with other content: the marker says done, but the entry is not this one.
    let other =
        json!({"key":"b","write":{"path":"h.md","mode":"append","content":"other\n","end":1}});
    let (_, out, _) = run_records(ew(t.path()), &[other]);
    let w = out[0]["write"].as_object().expect("object");
    assert_eq!(w["created"], false);
    assert!(!w.contains_key("end"), "{w:?}");
    // A field of that name in another kind of write is the user's, kept as it is.
    let replace = json!({"write":{"path":"r.md","content":"x","end":"mine"}});
    let (_, out, _) = run_records(ew(t.path()), &[replace]);
    assert_eq!(out[0]["write"]["end"], "mine");
    // Without a key there is no marker: the end of what this run appended.
    let plain = json!({"write":{"path":"h.md","mode":"append","content":"plain\n"}});
    let (_, out, _) = run_records(ew(t.path()), &[plain]);
    assert_eq!(out[0]["write"]["end"], text.len() as u64 + 6);
    assert_eq!(
        fs::read_to_string(t.join("h.md")).expect("read"),
        format!("{text}plain\n")
    );
}

#[test]
fn modes_existing_files_keep_theirs_new_ones_get_file_mode_or_umask() {
    let t = TempDir::new();
    fs::write(t.join("private"), "old").expect("write");
    fs::set_permissions(t.join("private"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let recs = [json!({"key":"k","write":[
            {"path":"private","content":"new"},
            {"path":"given","content":"g","file_mode":"0640"},
            {"path":"default","content":"d"},
            {"path":"private","mode":"append","content":"+","file_mode":"0666"}]})];
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("umask 077 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg("--root")
        .arg(t.path());
    let (code, _, err) = run_records(c, &recs);
    assert_eq!(code, Some(0), "{err}");
    let mode = |n: &str| fs::metadata(t.join(n)).expect("meta").permissions().mode() & 0o7777;
    assert_eq!(mode("private"), 0o600);
    assert_eq!(mode("given"), 0o640);
    assert_eq!(mode("default"), 0o600);
    assert_eq!(
        fs::read_to_string(t.join("private")).expect("read"),
        "new\n<!-- elf:k 3 -->\n+"
    );
}

#[test]
fn bad_records_stop_with_65_naming_the_line_after_passing_the_good_ones() {
    let t = TempDir::new();
    let input = b"{\"write\":{\"path\":\"one\",\"content\":\"1\"}}\n{\"write\":{\"path\":\"two\"}}\n{\"write\":{\"path\":\"three\",\"content\":\"3\"}}\n";
    let out = run_with_input(ew(t.path()), input);
    assert_eq!(out.status.code(), Some(65));
    assert_eq!(
        one_line(&out.stderr),
        "elf-write: line 2: write: missing \"content\" (or \"content_base64\")"
    );
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 1);
    assert!(t.join("one").exists() && !t.join("three").exists());

    // A bad write anywhere in a record's array writes nothing of that record.
    let rec = json!({"write":[{"path":"first","content":"x"},{"path":"second","mode":"bogus","content":"y"}]});
    let (code, recs, err) = run_records(ew(t.path()), &[rec]);
    assert_eq!((code, recs.len()), (Some(65), 0));
    assert!(err.contains("write[1]: unknown mode"), "{err}");
    assert!(!t.join("first").exists());

    // --keep-going: failed records carry error, the rest go on; every failure became an error
    // record, so the status is 0.
    let input = b"{\"write\":{\"path\":\"a\",\"content\":\"1\"}}\nnot json\n{\"k\":1,\"write\":{\"path\":\"/abs\",\"content\":\"x\"}}\n{\"write\":{\"path\":\"b\",\"content\":\"2\"}}\n";
    let out = run_with_input(ew(t.path()).arg("--keep-going"), input);
    assert_eq!(out.status.code(), Some(0));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[1]["error"]["code"], 65);
    assert_eq!(recs[1]["error"]["line"], 2);
    assert_eq!(recs[1]["error"]["tool"], "elf-write");
    assert_eq!(recs[2]["k"], 1);
    assert_eq!(recs[2]["error"]["code"], 65);
    assert_eq!(recs[2]["error"]["line"], 3);
    assert_eq!(recs[3]["write"]["created"], true);
    assert!(t.join("b").exists());
}

#[test]
fn escapes_are_refused_65_by_text_77_by_the_file_system_and_nothing_is_written_outside() {
    let t = TempDir::new();
    let root = t.join("root");
    let outside = t.join("outside");
    fs::create_dir_all(root.join("real")).expect("mkdir");
    fs::create_dir_all(&outside).expect("mkdir");
    fs::write(outside.join("target"), "outside").expect("write");
    symlink(&outside, root.join("out")).expect("symlink");
    symlink(outside.join("target"), root.join("file-link")).expect("symlink");
    symlink("real", root.join("inside-link")).expect("symlink");
    symlink("real/x", root.join("file-link-inside")).expect("symlink");
    let abs = format!("/etc/elf-write-escape-{}", std::process::id());
    // A path whose text leaves the root is a bad record (65), as in elf-commit; one the file
    // system leads out (a symlink) is refused for safety (77).
    for (path, mode, status) in [
        ("../x", "replace", 65),
        ("real/../../x", "create", 65),
        (abs.as_str(), "replace", 65),
        ("out/x", "replace", 77),
        ("out/new/deeper/x", "create", 77),
        ("file-link", "replace", 77),
        ("file-link", "append", 77),
        ("file-link-inside", "replace", 77),
        ("inside-link", "replace", 77),
    ] {
        let rec = json!({"key":"k","write":{"path":path,"mode":mode,"content":"pwned"}});
        let (code, recs, err) = run_records(ew(&root), &[rec]);
        assert_eq!(code, Some(status), "{path} ({mode}): {err}");
        assert!(recs.is_empty());
        assert!(err.starts_with("elf-write: line 1: "), "{err}");
    }
    assert!(!Path::new(&abs).exists());
    assert!(!t.join("x").exists());
    assert_eq!(listing(&outside), ["target"]);
    assert_eq!(
        fs::read_to_string(outside.join("target")).expect("read"),
        "outside"
    );
    assert!(
        fs::symlink_metadata(root.join("file-link"))
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert_eq!(listing(&root.join("real")), Vec::<String>::new());
    // A symlinked folder that stays inside the root is followed.
    let (code, recs, err) = run_records(
        ew(&root),
        &[json!({"write":{"path":"inside-link/y","content":"ok"}})],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(recs[0]["write"]["path"], "inside-link/y");
    assert_eq!(fs::read_to_string(root.join("real/y")).expect("read"), "ok");
}

#[test]
fn a_symlink_swapped_in_while_writing_never_leads_outside() {
    let t = TempDir::new();
    let root = t.join("root");
    let outside = t.join("outside");
    fs::create_dir_all(root.join("d")).expect("mkdir");
    fs::create_dir_all(&outside).expect("mkdir");
    symlink(&outside, root.join("swap")).expect("symlink");
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, a, b) = (stop.clone(), root.join("d"), root.join("swap"));
        std::thread::spawn(move || {
            let a = std::ffi::CString::new(a.into_os_string().into_encoded_bytes()).expect("c");
            let b = std::ffi::CString::new(b.into_os_string().into_encoded_bytes()).expect("c");
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: two valid C strings; RENAME_EXCHANGE swaps the entries atomically.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(r, 0, "renameat2 exchange");
                swaps += 1;
            }
            swaps
        })
    };
    let n = scale(400, 4000);
    let recs: Vec<Value> = (0..n)
        .map(|i| json!({"write":{"path":format!("d/f{i}"),"content":"x"}}))
        .collect();
    let out = watchdog(Duration::from_secs(120), {
        let root = root.clone();
        move || run_with_input(ew(&root).args(["--keep-going", "--no-sync"]), &lines(&recs))
    });
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    assert!(swaps > 0);
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), n);
    let failed = recs.iter().filter(|r| r.contains_key("error")).count();
    for r in recs.iter().filter(|r| r.contains_key("error")) {
        assert_eq!(r["error"]["code"], 77, "{r:?}");
    }
    assert_eq!(
        listing(&outside),
        Vec::<String>::new(),
        "written outside the root"
    );
    // Every success is in the real folder, wherever it is now.
    let real = if fs::symlink_metadata(root.join("d")).expect("d").is_dir() {
        root.join("d")
    } else {
        root.join("swap")
    };
    assert_eq!(listing(&real).len(), n - failed);
}

#[test]
fn readers_only_ever_see_one_of_the_two_contents() {
    let t = TempDir::new();
    let a = vec![b'a'; 1 << 20];
    let mut b = vec![b'b'; 1 << 20];
    b[12345] = b'\n';
    let target = t.join("f");
    fs::write(&target, &a).expect("write");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, target, a, b) = (stop.clone(), target.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let data = fs::read(&target).map_err(|e| format!("read failed: {e}"))?;
                if data != a && data != b {
                    return Err(format!("torn read of {} bytes", data.len()));
                }
                reads += 1;
            }
            Ok(reads)
        })
    };
    let n = scale(300, 1000);
    for i in 0..n {
        let out = run_with_input(cmd(BIN).arg(&target), if i % 2 == 0 { &b } else { &a });
        ok(&out);
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader");
    assert!(reads.as_ref().is_ok_and(|&r| r > 0), "{reads:?}");
    assert!(temps(t.path()).is_empty());
}

#[test]
fn kill_9_never_leaves_a_partial_target_and_leftovers_are_cleaned() {
    let t = TempDir::new();
    let a = vec![b'a'; 1 << 20];
    let b = vec![b'b'; 1 << 20];
    let target = t.join("f");
    fs::write(&target, &a).expect("write");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, target, a, b) = (stop.clone(), target.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let data = fs::read(&target).map_err(|e| format!("read failed: {e}"))?;
                if data != a && data != b {
                    return Err(format!("partial target of {} bytes", data.len()));
                }
            }
            Ok(())
        })
    };
    let n = scale(60, 500);
    for i in 0..n {
        let mut child = cmd(BIN)
            .arg(&target)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = if i % 2 == 0 { b.clone() } else { a.clone() };
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        std::thread::sleep(Duration::from_micros((i as u64 * 797) % 4000));
        let _ = child.kill();
        let _ = child.wait();
        let _ = feeder.join();
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(reader.join().expect("reader"), Ok(()));
    // A live writer's temporary file (ours, by pid) is never taken; dead ones are removed.
    let live = t.join(format!(
        ".elf-write.{}.0123456789abcdef.tmp",
        std::process::id()
    ));
    fs::write(&live, "in progress").expect("write");
    let out = run_with_input(cmd(BIN).arg(&target), b"final");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        temps(t.path()),
        [live
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned()]
    );
    assert_eq!(fs::read(&target).expect("read"), b"final");
}

fn spawn_records(c: &mut Command, input: Vec<u8>) -> (Child, std::thread::JoinHandle<()>) {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    (
        child,
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        }),
    )
}

fn collect(children: Vec<(Child, std::thread::JoinHandle<()>)>) -> Vec<Output> {
    children
        .into_iter()
        .map(|(c, feeder)| {
            let out = c.wait_with_output().expect("wait");
            let _ = feeder.join();
            out
        })
        .collect()
}

#[test]
fn fifty_racing_appends_with_replays_give_one_header_and_fifty_entries() {
    let t = TempDir::new();
    let root = t.path().to_path_buf();
    let header = "# Heuristics: testing\n\nGenerated from failures.\n\n---\n\n";
    let entry = |i: usize| {
        format!("## H-{i}: rule {i}\n\n**Confidence**: 0.7\n\nexplanation {i}\n\n---\n\n")
    };
    let outputs = watchdog(Duration::from_secs(120), move || {
        let mut children = Vec::new();
        // Every record twice: the replay races the original.
        for i in (0..50).chain(0..50) {
            let rec = json!({"key":format!("key-{i}"),"write":{"path":"memory/heuristics/testing.md",
                "mode":"append","header":header,"content":entry(i)}});
            children.push(spawn_records(&mut ew(&root), lines(&[rec])));
        }
        collect(children)
    });
    let mut created = 0;
    let mut headers = 0;
    for out in &outputs {
        ok(out);
        let w = &json_lines(&out.stdout)[0]["write"];
        created += usize::from(w["created"] == true);
        headers += usize::from(w["header_written"] == true);
    }
    assert_eq!((created, headers), (50, 1));
    let text = fs::read_to_string(t.join("memory/heuristics/testing.md")).expect("file");
    let body = text.strip_prefix(header).expect("starts with the header");
    assert_eq!(text.matches("# Heuristics: testing").count(), 1);
    let mut seen = Vec::new();
    for block in body.split("<!-- elf:").skip(1) {
        let (key, rest) = block.split_once(" -->\n").expect("marker line");
        let i: usize = key
            .strip_prefix("key-")
            .and_then(|n| n.parse().ok())
            .expect("key");
        assert_eq!(rest, entry(i), "entry {i} torn or interleaved");
        seen.push(i);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    assert!(temps(&t.join("memory/heuristics")).is_empty());
}

#[test]
fn twenty_racing_unique_creates_give_twenty_complete_files_and_replays_find_theirs() {
    let t = TempDir::new();
    let root = t.path().to_path_buf();
    let rec = |i: usize| {
        json!({"key":format!("c{i}"),"write":{"path":"f/20251201_same-title.md","mode":"create",
            "unique":true,"content":format!("# same title\n\nrecord {i}\n")}})
    };
    let race = move || {
        let root = root.clone();
        watchdog(Duration::from_secs(120), move || {
            let children: Vec<_> = (0..20)
                .map(|i| spawn_records(&mut ew(&root), lines(&[rec(i)])))
                .collect();
            collect(children)
        })
    };
    let first = race();
    let mut paths = Vec::new();
    for (i, out) in first.iter().enumerate() {
        ok(out);
        let w = &json_lines(&out.stdout)[0]["write"];
        assert_eq!(w["created"], true);
        let p = w["path"].as_str().expect("path").to_string();
        assert_eq!(
            fs::read_to_string(t.join(&p)).expect("file"),
            format!("# same title\n\nrecord {i}\n")
        );
        paths.push(p);
    }
    let mut expected: Vec<String> = (1..=20)
        .map(|n| {
            if n == 1 {
                "20251201_same-title.md".into()
            } else {
                format!("20251201_same-title-{n}.md")
            }
        })
        .collect();
    expected.sort();
    assert_eq!(listing(&t.join("f")), expected);
    // Replaying all of them, racing again: each finds its own file.
    for (i, out) in race().iter().enumerate() {
        assert_eq!(out.status.code(), Some(0));
        let w = &json_lines(&out.stdout)[0]["write"];
        assert_eq!(
            (w["created"].clone(), w["path"].as_str()),
            (json!(false), Some(paths[i].as_str()))
        );
    }
    assert_eq!(listing(&t.join("f")), expected);
}

/// Unmounts on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_exits_74_leaving_the_old_content_and_no_temporary_file() {
    let t = TempDir::new();
    let mnt = t.join("small");
    fs::create_dir_all(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        skip_unless_root(
            "write::disk_full_exits_74_leaving_the_old_content_and_no_temporary_file",
            "cannot mount a 1 MiB tmpfs (needs root or CAP_SYS_ADMIN)",
        );
        return;
    }
    let _guard = Mounted(mnt.clone());
    let old = vec![b'o'; 300 << 10];
    fs::write(mnt.join("f"), &old).expect("old content");
    let big = vec![b'n'; 2 << 20];
    let out = run_with_input(ew(&mnt).arg("f"), &big);
    assert_eq!(
        out.status.code(),
        Some(74),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(one_line(&out.stderr).contains("No space left on device"));
    assert_eq!(fs::read(mnt.join("f")).expect("read"), old);
    assert_eq!(listing(&mnt), ["f"]);
    // An append that does not fit (old + new content in the temporary file): the same.
    let out = run_with_input(ew(&mnt).args(["-a", "f"]), &vec![b'n'; 500 << 10]);
    assert_eq!(out.status.code(), Some(74));
    assert_eq!(fs::read(mnt.join("f")).expect("read"), old);
    // The record form: the record fails with 74, the file stays.
    let rec = json!({"write":{"path":"g","content":"x".repeat(900 << 10)}});
    let (code, recs, _) = run_records(ew(&mnt).arg("--keep-going"), &[rec]);
    assert_eq!(code, Some(0));
    assert_eq!(recs[0]["error"]["code"], 74);
    assert_eq!(listing(&mnt), ["f"]);
}

#[test]
fn file_size_limit_exits_74_and_removes_the_temporary_file() {
    let t = TempDir::new();
    fs::write(t.join("f"), "old").expect("write");
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("ulimit -f 8 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg(t.join("f"));
    let out = run_with_input(c, &vec![b'x'; 256 << 10]);
    assert_eq!(
        out.status.code(),
        Some(74),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(t.join("f")).expect("read"), b"old");
    assert_eq!(listing(t.path()), ["f"]);
}

#[test]
fn stream_form_replaces_appends_and_creates() {
    let t = TempDir::new();
    let f = t.join("f.txt");
    fs::write(&f, "abc\n").expect("write");
    // Reads all of stdin before writing: a pipeline from the same file works (like sponge).
    let out = Command::new("sh")
        .arg("-c")
        .arg("tr a-z A-Z < \"$1\" | \"$0\" \"$1\"")
        .arg(BIN)
        .arg(&f)
        .output()
        .expect("sh");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(fs::read_to_string(&f).expect("read"), "ABC\n");
    assert_eq!(
        run_with_input(cmd(BIN).args(["-a", "--key", "k"]).arg(&f), b"more\n")
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        run_with_input(cmd(BIN).args(["-a", "--key", "k"]).arg(&f), b"more\n")
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        fs::read_to_string(&f).expect("read"),
        "ABC\n<!-- elf:k -->\nmore\n"
    );
    // --create: same content is fine, other content refused; --unique picks a name and prints it.
    let same = fs::read(&f).expect("read");
    assert_eq!(
        run_with_input(cmd(BIN).arg("--create").arg(&f), &same)
            .status
            .code(),
        Some(0)
    );
    let out = run_with_input(cmd(BIN).arg("--create").arg(&f), b"other");
    assert_eq!(out.status.code(), Some(77));
    assert!(one_line(&out.stderr).contains("exists with other content"));
    let out = run_with_input(cmd(BIN).args(["--create", "--unique"]).arg(&f), b"other");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", t.join("f-2.txt").display())
    );
    let out = run_with_input(
        cmd(BIN)
            .args(["--create", "--unique", "--root"])
            .arg(t.path())
            .arg("f.txt"),
        b"other",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "f-2.txt\n");
    // A new file gets --file-mode; a symlink at PATH is followed without --root.
    assert_eq!(
        run_with_input(cmd(BIN).args(["-m", "0600"]).arg(t.join("new")), b"n")
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        fs::metadata(t.join("new"))
            .expect("new")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    symlink("f.txt", t.join("link")).expect("symlink");
    assert_eq!(
        run_with_input(cmd(BIN).arg(t.join("link")), b"via link\n")
            .status
            .code(),
        Some(0)
    );
    assert!(
        fs::symlink_metadata(t.join("link"))
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(&f).expect("read"), "via link\n");
    // With --root, the same symlink is refused.
    let out = run_with_input(cmd(BIN).arg("--root").arg(t.path()).arg("link"), b"x");
    assert_eq!(out.status.code(), Some(77));
    assert_eq!(fs::read_to_string(&f).expect("read"), "via link\n");
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["-a", "--create", "f"][..],
        &["--unique", "f"],
        &["--key", "k", "f"],
        &["a", "b"],
        &["--keep-going", "f"],
        &["--append"],
        &["--timeout", "soon"],
        &["-m", "999", "f"],
    ] {
        let out = run_with_input(cmd(BIN).args(args), b"");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        one_line(&out.stderr);
    }
}

#[test]
fn locks_live_in_git_or_tmp_and_are_shared_whatever_the_route() {
    let t = TempDir::new();
    fs::create_dir_all(t.join(".git")).expect("git");
    fs::create_dir_all(t.join("memory")).expect("memory");
    symlink("memory", t.join("mem")).expect("symlink");
    let rec = json!({"write":{"path":"memory/x.md","mode":"append","content":"a\n"}});
    assert_eq!(run_records(ew(t.path()), &[rec]).0, Some(0));
    let locks = t.join(".git/elf-write-locks");
    let made = listing(&locks);
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].ends_with("-x.md.lock"));
    assert_eq!(
        fs::metadata(&locks).expect("locks").permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(listing(t.path()), [".git", "mem", "memory"]);
    assert_eq!(listing(&t.join("memory")), ["x.md"]);
    // Another root, the stream form, a symlinked folder: the same lock file.
    let rec = json!({"write":{"path":"x.md","mode":"append","content":"b\n"}});
    assert_eq!(run_records(ew(&t.join("memory")), &[rec]).0, Some(0));
    assert_eq!(
        run_with_input(cmd(BIN).arg("-a").arg(t.join("mem/x.md")), b"c\n")
            .status
            .code(),
        Some(0)
    );
    assert_eq!(listing(&locks), made);
    assert_eq!(
        fs::read_to_string(t.join("memory/x.md")).expect("x"),
        "a\nb\nc\n"
    );
}

#[test]
fn a_held_lock_gives_75_after_the_timeout_and_a_symlinked_lock_dir_77() {
    let t = TempDir::new();
    let locks = t.join("locks");
    let root = t.join("root");
    fs::create_dir_all(&root).expect("root");
    let run = |extra: &[&str], content: &str| {
        let rec = json!({"write":{"path":"f","content":content}});
        let mut c = ew(&root);
        c.arg("--lock-dir").arg(&locks).args(extra);
        run_records(c, &[rec])
    };
    assert_eq!(run(&[], "one").0, Some(0));
    let names = listing(&locks);
    assert_eq!(names.len(), 1);
    let held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(locks.join(&names[0]))
        .expect("open lock");
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let (code, recs, err) = run(&["-w", "200ms"], "two");
    assert_eq!(code, Some(75), "{err}");
    assert!(recs.is_empty());
    assert!(err.contains("lock not obtained"), "{err}");
    assert_eq!(fs::read_to_string(root.join("f")).expect("f"), "one");
    drop(held);
    // Not -w 0: a child another test is forking may hold a copy of `held` until it execs.
    assert_eq!(run(&["-w", "10s"], "two").0, Some(0));
    // A lock folder that is a symlink is refused.
    fs::create_dir_all(t.join("elsewhere")).expect("mkdir");
    symlink(t.join("elsewhere"), t.join("linked-locks")).expect("symlink");
    let mut c = ew(&root);
    c.arg("--lock-dir").arg(t.join("linked-locks"));
    let (code, _, err) = run_records(c, &[json!({"write":{"path":"f","content":"three"}})]);
    assert_eq!(code, Some(77), "{err}");
    assert_eq!(listing(&t.join("elsewhere")), Vec::<String>::new());
}

/// Records already waiting are finished as a batch (their replaces and appends made durable
/// together): the files must end exactly as if each record had been written alone, in order,
/// and every record must come out in order with its results.
#[test]
fn a_stream_of_waiting_records_ends_as_if_written_one_by_one() {
    let t = TempDir::new();
    let n = 300;
    let mut records = Vec::new();
    for i in 0..n {
        let rec = match i % 6 {
            // The same few files replaced again and again, within one batch too.
            0 | 1 => {
                json!({"i": i, "write": {"path": format!("r/f{}", i % 7), "content": format!("v{i}\n")}})
            }
            2 | 3 => json!({"i": i, "key": format!("k{i}"),
                "write": {"path": format!("log{}.md", (i / 6) % 3), "mode": "append", "header": "# log\n", "content": format!("e{i}\n")}}),
            4 if i % 4 == 0 => {
                json!({"i": i, "write": {"path": "u.md", "mode": "create", "unique": true, "content": format!("u{i}\n")}})
            }
            4 => json!({"i": i, "write": [
                {"path": format!("r/f{}", i % 7), "content": format!("v{i}\n")},
                {"path": "pair.md", "mode": "replace", "content": format!("p{i}\n")}]}),
            _ => json!({"i": i, "note": "no write"}),
        };
        records.push(rec);
    }
    let (code, out, err) = run_records(ew(t.path()), &records);
    assert_eq!(code, Some(0), "{err}");
    let first_run = out.clone();
    let order: Vec<i64> = out.iter().map(|r| r["i"].as_i64().expect("i")).collect();
    assert_eq!(order, (0..n).collect::<Vec<i64>>());
    // Every write reports what it did.
    for r in &out {
        let writes: Vec<&Value> = match r.get("write") {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(w) => vec![w],
            None => continue,
        };
        for w in writes {
            assert_eq!(w["created"], true, "{r:?}");
            assert!(w["bytes"].as_u64().expect("bytes") > 0, "{r:?}");
        }
    }
    // Replaced files: the last record that wrote each.
    for f in 0..7 {
        let last = (0..n)
            .filter(|i| (i % 6 < 2 || (i % 6 == 4 && i % 4 != 0)) && i % 7 == f)
            .max()
            .expect("written");
        assert_eq!(
            fs::read_to_string(t.join(format!("r/f{f}"))).expect("read"),
            format!("v{last}\n")
        );
    }
    // Each append's end is where its own entry ends, though the batch appended more after it.
    let is_append =
        |r: &&serde_json::Map<String, Value>| r.get("write").is_some_and(|w| w["mode"] == "append");
    for r in out.iter().filter(is_append) {
        let w = &r["write"];
        let text = fs::read(t.join(w["path"].as_str().expect("path"))).expect("read");
        let end = usize::try_from(w["end"].as_u64().expect("end")).expect("end");
        let entry = format!(
            "<!-- elf:{} -->\n{}",
            r["key"].as_str().expect("key"),
            w["content"].as_str().expect("content")
        );
        assert!(text[..end].ends_with(entry.as_bytes()), "{r:?}");
    }
    // Appends: one header, every entry once, in record order.
    for l in 0..3 {
        let text = fs::read_to_string(t.join(format!("log{l}.md"))).expect("read");
        let entries: Vec<String> = text
            .lines()
            .filter(|s| s.starts_with('e'))
            .map(str::to_owned)
            .collect();
        let expected: Vec<String> = (0..n)
            .filter(|i| (i % 6 == 2 || i % 6 == 3) && (i / 6) % 3 == l)
            .map(|i| format!("e{i}"))
            .collect();
        assert_eq!(entries, expected);
        assert_eq!(text.matches("# log").count(), 1);
    }
    // Unique creates: one file each, distinct names.
    let uniques = listing(t.path())
        .into_iter()
        .filter(|f| f.starts_with('u'))
        .count();
    assert_eq!(uniques, (0..n).filter(|i| i % 6 == 4 && i % 4 == 0).count());
    assert!(temps(t.path()).is_empty() && temps(&t.join("r")).is_empty());
    // A replay changes nothing and says so.
    let before: Vec<String> = (0..3)
        .map(|l| fs::read_to_string(t.join(format!("log{l}.md"))).expect("read"))
        .collect();
    let appends: Vec<Value> = records
        .iter()
        .filter(|r| r["write"]["mode"] == "append")
        .cloned()
        .collect();
    let (code, out, err) = run_records(ew(t.path()), &appends);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.len(), appends.len());
    assert!(
        out.iter()
            .all(|r| r.get("write").is_some_and(|w| w["created"] == false))
    );
    let ends = |recs: &[serde_json::Map<String, Value>]| -> Vec<Value> {
        recs.iter().map(|r| r["write"]["end"].clone()).collect()
    };
    let first: Vec<_> = first_run.iter().filter(is_append).cloned().collect();
    assert_eq!(ends(&out), ends(&first), "a replay finds the same ends");
    let after: Vec<String> = (0..3)
        .map(|l| fs::read_to_string(t.join(format!("log{l}.md"))).expect("read"))
        .collect();
    assert_eq!(before, after);
}

/// Two streams append to the same files in opposite orders while each holds the locks of
/// its pending batch: neither may wait for a lock while holding one, so both finish, and
/// every entry is in each file once, each stream's in its own order.
#[test]
fn two_streams_batching_the_same_files_in_opposite_orders_never_deadlock() {
    let t = TempDir::new();
    let root = t.path().to_path_buf();
    let per = scale(200, 1000);
    let outputs = watchdog(Duration::from_secs(180), move || {
        let mut children = Vec::new();
        for side in ["a", "b"] {
            let recs: Vec<Value> = (0..per)
                .map(|i| {
                    let f = if side == "a" { i % 5 } else { 4 - i % 5 };
                    json!({"key": format!("{side}{i}"), "write": {"path": format!("f{f}.md"),
                        "mode": "append", "content": format!("{side} {i}\n")}})
                })
                .collect();
            children.push(spawn_records(&mut ew(&root), lines(&recs)));
        }
        collect(children)
    });
    for out in &outputs {
        ok(out);
        assert_eq!(json_lines(&out.stdout).len(), per);
    }
    for f in 0..5 {
        let text = fs::read_to_string(t.join(format!("f{f}.md"))).expect("read");
        for side in ["a", "b"] {
            let got: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(side).and_then(|r| r.trim().parse().ok()))
                .collect();
            let want: Vec<usize> = (0..per)
                .filter(|i| (if side == "a" { i % 5 } else { 4 - i % 5 }) == f)
                .collect();
            assert_eq!(got, want, "f{f}.md, stream {side}");
        }
    }
    assert!(temps(t.path()).is_empty());
}

/// Names longer than a file system takes (255 bytes) once failed with 74 "File name too long".
/// A path with such a name is a bad record (65, naming the line); a unique create shortens the
/// name's stem so that its number fits, never inside a UTF-8 character.
#[test]
fn names_over_255_bytes_are_bad_records_and_unique_names_stay_within_the_limit() {
    let t = TempDir::new();
    let w = |path: &str, content: &str| json!({"write": {"path": path, "content": content, "mode": "create", "unique": true}});
    let max_ascii = format!("{}.md", "x".repeat(252));
    // "é" is 2 bytes, "€" 3: a name of 254 or 255 bytes whose shortened stem must not end
    // in the middle of a character.
    let max_e = format!("a{}.md", "é".repeat(125));
    let max_euro = format!("{}.md", "€".repeat(84));
    fs::write(t.join(&max_ascii), "taken\n").expect("seed");
    fs::write(t.join(&max_e), "taken\n").expect("seed");
    fs::write(t.join(&max_euro), "taken\n").expect("seed");
    let records = [
        w(&max_ascii, "one\n"),
        w(&max_ascii, "two\n"),
        w(&max_e, "three\n"),
        w(&max_euro, "four\n"),
        w(&max_ascii, "one\n"),
    ];
    let (code, out, err) = run_records(ew(t.path()), &records);
    assert_eq!(code, Some(0), "{err}");
    let paths: Vec<&str> = out
        .iter()
        .map(|r| r["write"]["path"].as_str().expect("path"))
        .collect();
    let want = [
        format!("{}-2.md", "x".repeat(250)),
        format!("{}-3.md", "x".repeat(250)),
        format!("a{}-2.md", "é".repeat(124)),
        format!("{}-2.md", "€".repeat(83)),
        format!("{}-2.md", "x".repeat(250)),
    ];
    assert_eq!(paths, want);
    assert_eq!(
        out[4]["write"]["created"],
        json!(false),
        "a replay finds its file"
    );
    for (p, content) in want.iter().zip(["one\n", "two\n", "three\n", "four\n"]) {
        assert!(p.len() <= 255);
        assert_eq!(fs::read_to_string(t.join(p)).expect("written"), content);
    }

    // 256 bytes, as the file name or as a folder name: 65 naming the line, nothing written.
    for (i, path) in [
        "y".repeat(256),
        format!("d/{}/f.md", "y".repeat(256)),
        format!("{}.md", "é".repeat(127)),
    ]
    .iter()
    .enumerate()
    {
        let t = TempDir::new();
        let records = [
            json!({"write": {"path": "ok.md", "content": "ok\n"}}),
            json!({"write": {"path": path, "content": "x"}}),
        ];
        let (code, out, err) = run_records(ew(t.path()), &records);
        assert_eq!(code, Some(65), "case {i}: {err}");
        assert_eq!(out.len(), 1, "the good record is passed on");
        let line = one_line(err.as_bytes());
        assert!(
            line.starts_with("elf-write: line 2: ") && line.contains("the name is too long"),
            "case {i}: {line}"
        );
        assert_eq!(listing(t.path()), ["ok.md"], "case {i}");
    }

    // The stream form too.
    let t = TempDir::new();
    let out = run_with_input(
        {
            let mut c = cmd(BIN);
            c.arg(t.join("z".repeat(256)));
            c
        },
        b"x",
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(one_line(&out.stderr).contains("the name is too long"));
    let out = run_with_input(
        {
            let mut c = cmd(BIN);
            c.args(["--create", "--unique"]).arg(t.join(&max_ascii));
            c
        },
        b"a",
    );
    ok(&out);
    let out = run_with_input(
        {
            let mut c = cmd(BIN);
            c.args(["--create", "--unique"]).arg(t.join(&max_ascii));
            c
        },
        b"b",
    );
    ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        t.join(format!("{}-2.md", "x".repeat(250)))
            .to_string_lossy()
    );
}

/// A batch holds about three descriptors per waiting record: under `ulimit -n 64` a stream of
/// records to distinct files once stopped with 74 at line 20. Running short of descriptors now
/// finishes the batch held so far and goes on with smaller ones.
#[test]
fn few_descriptors_shrink_the_batch_instead_of_failing() {
    for (limit, n) in [(64, 64), (64, 500), (24, 500)] {
        let t = TempDir::new();
        let root = t.join("root");
        fs::create_dir(&root).expect("root");
        let mut records = Vec::new();
        for i in 0..n {
            records.push(
                json!({"write": {"path": format!("flat/f{i}.md"), "content": format!("r{i}\n")}}),
            );
        }
        // Appends in folders of their own, records of several writes, creates.
        for i in 0..8 {
            records.push(
                json!({"key": format!("k{i}"), "write": {"path": format!("d{i}/log.md"),
                "content": format!("a{i}\n"), "mode": "append", "header": "# log\n"}}),
            );
            records.push(json!({"key": format!("m{i}"), "write": [
                {"path": format!("d{i}/x.md"), "content": "x\n", "mode": "create"},
                {"path": format!("d{i}/y.md"), "content": "y\n"}]}));
        }
        let input = t.join("in.jsonl");
        fs::write(&input, lines(&records)).expect("input");
        let script = format!("ulimit -n {limit} && exec '{BIN}' --root \"$1\"");
        let out = cmd("sh")
            .args(["-c", &script, "sh"])
            .arg(&root)
            .stdin(fs::File::open(&input).expect("open"))
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ulimit -n {limit}, {n} records: {err}"
        );
        let got = json_lines(&out.stdout);
        assert_eq!(got.len(), records.len());
        for (r, want) in got.iter().zip(&records) {
            assert_eq!(r.get("key"), want.get("key"));
            assert!(r.get("error").is_none(), "{r:?}");
        }
        for i in 0..n {
            assert_eq!(
                fs::read_to_string(root.join(format!("flat/f{i}.md"))).expect("written"),
                format!("r{i}\n")
            );
        }
        for i in 0..8 {
            let log = fs::read_to_string(root.join(format!("d{i}/log.md"))).expect("appended");
            assert!(
                log.starts_with("# log\n") && log.ends_with(&format!("a{i}\n")),
                "{log}"
            );
            assert_eq!(
                fs::read_to_string(root.join(format!("d{i}/y.md"))).expect("y"),
                "y\n"
            );
            assert!(temps(&root.join(format!("d{i}"))).is_empty());
        }
        assert!(temps(&root.join("flat")).is_empty());
    }
}

/// The names in the fallback lock folder (`/tmp/elf-write-UID/`) that contain `tag`.
fn fallback_locks(tag: &str) -> Vec<String> {
    // SAFETY: geteuid(2) cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut v: Vec<String> = fs::read_dir(format!("/tmp/elf-write-{uid}"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(tag))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_fallback_lock_folder_keeps_only_the_locks_in_use() {
    let t = TempDir::new();
    if t.path().ancestors().any(|a| a.join(".git").is_dir()) {
        eprintln!("skipped: the temporary folder is inside a git repository");
        return;
    }
    // Other tests write through the same folder at the same time: only ours are looked at.
    let tag = format!("bound{}x", std::process::id());
    for i in 0..40 {
        let out = run_with_input(cmd(BIN).arg(t.join(format!("{tag}-{i}.md"))), b"x\n");
        ok(&out);
        // Another test's writer pruning the folder may hold our lock file for the moment it
        // takes to remove it: it is gone once that prune is done.
        wait_for(
            Duration::from_secs(10),
            &format!("no lock file of ours after run {i}"),
            || fallback_locks(&tag).is_empty(),
        );
    }
    // One run writing more paths than it prunes after (it prunes along the way too).
    let recs: Vec<Value> = (0..300)
        .map(|i| json!({"write":{"path":format!("{tag}-r{i}.md"),"content":"y\n"}}))
        .collect();
    let (code, out, err) = run_records(ew(t.path()), &recs);
    assert_eq!((code, out.len()), (Some(0), 300), "{err}");
    wait_for(Duration::from_secs(10), "no lock file of ours", || {
        fallback_locks(&tag).is_empty()
    });
    assert_eq!(
        fs::read_to_string(t.join(format!("{tag}-r299.md")))
            .ok()
            .as_deref(),
        Some("y\n")
    );
    // A lock file someone holds is left alone, and goes with the next writer done once free.
    // SAFETY: geteuid(2) cannot fail.
    let uid = unsafe { libc::geteuid() };
    let name = format!("0000000000000000-{tag}-held.lock");
    let held = fs::File::create(format!("/tmp/elf-write-{uid}/{name}")).expect("lock file");
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    ok(&run_with_input(
        cmd(BIN).arg(t.join(format!("{tag}-a.md"))),
        b"a\n",
    ));
    assert_eq!(fallback_locks(&tag), [name]);
    drop(held);
    ok(&run_with_input(
        cmd(BIN).arg(t.join(format!("{tag}-b.md"))),
        b"b\n",
    ));
    assert_eq!(fallback_locks(&tag), Vec::<String>::new());
}
