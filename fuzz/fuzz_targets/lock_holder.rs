//! elf-lock's record parser: the holder record that any process able to write a lock file (or
//! a `--mkdir` owner file) can put there, and the `/proc/locks` lines it is checked against
//! (`holder.rs`).
//!
//! Properties: no input panics; a record is taken only when it is a JSON object with a
//! numeric `pid`; the kernel's lines are taken only as `FLOCK` entries of the file asked
//! about; a record elf-lock writes, whatever the host name and command (control characters,
//! quotes, invalid UTF-8), is one line that reads back with the same pid, host and command.
#![no_main]

use elf_lock::holder;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // What a lock file may hold.
    if let Some(rec) = holder::parse(data) {
        assert!(rec.get("pid").and_then(Value::as_u64).is_some());
    }
    // What /proc/locks may say, for a file whose identity comes from the input.
    let num = |i: usize| {
        let mut b = [0u8; 8];
        for (j, x) in b.iter_mut().enumerate() {
            *x = data.get(i * 8 + j).copied().unwrap_or(0);
        }
        u64::from_le_bytes(b)
    };
    let (dev, ino) = (num(0), num(1) % 100_000);
    let text = String::from_utf8_lossy(data);
    let k = holder::Kernel::parse(&text, dev, ino);
    assert_eq!(k.file, (dev, ino));
    assert!(k.held.len() + k.waiters <= text.lines().count());
    let _ = k.mode();

    // A record written for any host and command reads back as written.
    let mut parts = data.split(|&b| b == 0);
    let host = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let command: Vec<OsString> = parts.map(|a| OsStr::from_bytes(a).to_os_string()).collect();
    let me = holder::Me {
        pid: u32::try_from(num(2) % (1 << 22)).unwrap_or(1),
        start_time: Some(num(3)),
        boot_id: Some(host.chars().rev().collect()),
        host: host.clone(),
    };
    let line = me.record(&command);
    assert!(line.ends_with(b"\n"));
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    let rec = holder::parse(&line).expect("our own record reads back");
    assert_eq!(
        rec.get("pid").and_then(Value::as_u64),
        Some(u64::from(me.pid))
    );
    assert_eq!(rec.get("host").and_then(Value::as_str), Some(host.as_str()));
    assert_eq!(rec.get("start_time").and_then(Value::as_u64), me.start_time);
    let got: Vec<&str> = rec
        .get("command")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let want: Vec<String> = command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, want);
    // The kernel lists nothing here, so the record is not confirmed, and says so.
    let none = holder::Kernel::parse("", dev, ino);
    assert_eq!(
        holder::describe(&none, Some(&rec), &me),
        "held by an unknown process"
    );
});
