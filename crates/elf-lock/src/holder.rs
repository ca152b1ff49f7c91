//! The holder record, and what the kernel says about who holds a lock.
//!
//! After taking an exclusive lock, elf-lock writes one JSON line into the lock file (the same
//! line into the owner file of a `--mkdir` lock):
//!
//! ```json
//! {"pid":4242,"host":"build1","boot_id":"0f6c...","start_time":1234567,"since":"2026-11-26T23:27:17.123Z","command":["make","all"]}
//! ```
//!
//! - `pid`: the elf-lock process that holds the lock (the command is its child, unless `-F`,
//!   where the command took over that pid);
//! - `host`: the host name; `boot_id`: `/proc/sys/kernel/random/boot_id` at that time;
//! - `start_time`: the process's start time in clock ticks since boot, field 22 of
//!   `/proc/PID/stat`, which tells a live holder from a later process that reused its pid;
//! - `since`: when the lock was taken, UTC, ISO 8601 with milliseconds;
//! - `command`: the command's arguments (`["/bin/sh","-c","STRING"]` for `-c`), each
//!   converted to UTF-8 lossily.
//!
//! A record is only a claim: the file keeps the last one after its holder has gone. It is
//! reported as the holder only when it is confirmed: the kernel lists a `flock` lock on the
//! file by that pid (`/proc/locks`), and the process with that pid on this host and boot still
//! has the recorded start time.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

use elf_core::{held, process};
use serde_json::{Map, Value};

/// The largest holder record read back (a longer first line is not a record).
const MAX_RECORD: usize = 64 * 1024;

/// This process as a holder record names it.
pub struct Me {
    pub pid: u32,
    pub start_time: Option<u64>,
    pub boot_id: Option<String>,
    pub host: String,
}

impl Me {
    pub fn get() -> Me {
        let pid = std::process::id();
        Me {
            pid,
            start_time: start_time_of("self"),
            boot_id: boot_id(),
            host: hostname(),
        }
    }

    /// The parent process, which holds a lock taken on a descriptor it passed down (flock(1)'s
    /// `FD` form), and its command line.
    pub fn parent() -> (Me, Vec<OsString>) {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: getppid(2) cannot fail.
        let ppid = unsafe { libc::getppid() };
        let pid = u32::try_from(ppid).unwrap_or(0);
        let me = Me {
            pid,
            start_time: start_time_of(&pid.to_string()),
            boot_id: boot_id(),
            host: hostname(),
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let command = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| std::ffi::OsStr::from_bytes(a).to_os_string())
            .collect();
        (me, command)
    }

    /// The record line, newline included, for `command`.
    pub fn record(&self, command: &[OsString]) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + command.iter().map(|a| a.len() + 3).sum::<usize>());
        out.extend_from_slice(b"{\"pid\":");
        out.extend_from_slice(self.pid.to_string().as_bytes());
        out.extend_from_slice(b",\"host\":");
        push_json_str(&mut out, &self.host);
        out.extend_from_slice(b",\"boot_id\":");
        match &self.boot_id {
            Some(b) => push_json_str(&mut out, b),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"start_time\":");
        match self.start_time {
            Some(t) => out.extend_from_slice(t.to_string().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"since\":\"");
        out.extend_from_slice(iso8601(SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\",\"command\":[");
        for (i, a) in command.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_str(&mut out, &a.to_string_lossy());
        }
        out.extend_from_slice(b"]}\n");
        out
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Writes the record into a lock file we hold exclusively: one write at offset 0, then the
/// file is cut to its length, so a reader sees the old record or the new one as its first line.
pub fn write(file: &File, line: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let old = file.metadata()?.len();
    file.write_all_at(line, 0)?;
    if old <= line.len() as u64 {
        // Nothing after the new record: spare the file system a truncation.
        return Ok(());
    }
    let len = libc::off_t::try_from(line.len()).map_err(|_| io::Error::other("record too long"))?;
    // SAFETY: ftruncate(2) on a descriptor we own for the duration of the call.
    if unsafe { libc::ftruncate(file.as_raw_fd(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The record in the first line of a file, if it holds one. Reads with pread(2), so the
/// offset of a descriptor shared with the command is left alone.
pub fn read(file: &File) -> Option<Map<String, Value>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 512];
    let mut len = 0;
    loop {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
        if buf[..len].contains(&b'\n') || len >= MAX_RECORD {
            break;
        }
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
    }
    parse(&buf[..len])
}

/// The record in the first line of `bytes`, if it is a JSON object with a numeric `pid`.
pub fn parse(bytes: &[u8]) -> Option<Map<String, Value>> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(m)) if m.get("pid").and_then(Value::as_u64).is_some() => Some(m),
        _ => None,
    }
}

/// Whether a recorded process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Same host and boot, and the pid still has the recorded start time.
    Alive,
    /// Provably gone: another boot of this host, or no such pid, or the pid now belongs to a
    /// process with another start time (or a zombie).
    Gone,
    /// Cannot tell: another host, or the record lacks what the check needs.
    Unknown,
}

/// Checks a record against this host, this boot and the process table.
pub fn liveness(rec: &Map<String, Value>, me: &Me) -> Liveness {
    let Some(pid) = rec.get("pid").and_then(Value::as_u64) else {
        return Liveness::Unknown;
    };
    if rec.get("host").and_then(Value::as_str) != Some(me.host.as_str()) {
        return Liveness::Unknown;
    }
    match (
        rec.get("boot_id").and_then(Value::as_str),
        me.boot_id.as_deref(),
    ) {
        (Some(theirs), Some(ours)) if theirs != ours => return Liveness::Gone,
        (Some(_), Some(_)) => {}
        _ => return Liveness::Unknown,
    }
    let Some(recorded) = rec.get("start_time").and_then(Value::as_u64) else {
        return Liveness::Unknown;
    };
    match process::stat(&pid.to_string()).map(|s| (s.state, s.start_time)) {
        None => Liveness::Gone,
        Some((state, start)) => {
            if state == b'Z' || state == b'X' || start != recorded {
                Liveness::Gone
            } else {
                Liveness::Alive
            }
        }
    }
}

/// A `flock(2)` lock the kernel lists on a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLock {
    pub pid: i64,
    pub exclusive: bool,
}

/// What `/proc/locks` says about one file.
#[derive(Debug, Default)]
pub struct Kernel {
    /// The locks held.
    pub held: Vec<KernelLock>,
    /// How many processes wait for one.
    pub waiters: usize,
    /// The file: device and inode.
    pub file: (u64, u64),
}

impl Kernel {
    /// Reads `/proc/locks` for the file of `meta` ([`elf_core::held::proc_locks`], which reads
    /// again when a shifting list may have skipped the file's entry).
    pub fn of(meta: &std::fs::Metadata) -> io::Result<Kernel> {
        let (dev, ino) = (meta.dev(), meta.ino());
        Ok(Kernel::from_listed(held::proc_locks(dev, ino)?, dev, ino))
    }

    /// Parses `/proc/locks` text, keeping the `FLOCK` entries of `(dev, ino)`
    /// ([`elf_core::held::parse_proc_locks`]).
    pub fn parse(text: &str, dev: u64, ino: u64) -> Kernel {
        Kernel::from_listed(held::parse_proc_locks(text, dev, ino), dev, ino)
    }

    fn from_listed(listed: Vec<held::Listed>, dev: u64, ino: u64) -> Kernel {
        let mut k = Kernel {
            file: (dev, ino),
            ..Kernel::default()
        };
        for l in listed {
            if l.waiter {
                k.waiters += 1;
            } else {
                k.held.push(KernelLock {
                    pid: l.pid,
                    exclusive: l.exclusive,
                });
            }
        }
        k
    }

    /// "exclusive", "shared" or none.
    pub fn mode(&self) -> Option<&'static str> {
        match self.held.first() {
            None => None,
            Some(k) if k.exclusive => Some("exclusive"),
            Some(_) => Some("shared"),
        }
    }

    /// The record, when the kernel confirms its pid holds the lock exclusively and the process
    /// is still the one that wrote it.
    ///
    /// The kernel names the process that took a lock. A lock taken on a descriptor the
    /// process shares with its parent (flock(1)'s `FD` form) belongs to the parent once the
    /// taker has gone, so a record naming a process that does not appear is also confirmed
    /// when that process's own descriptors carry the lock (`/proc/PID/fdinfo`).
    pub fn confirms(&self, rec: &Map<String, Value>, me: &Me) -> bool {
        let Some(pid) = rec.get("pid").and_then(Value::as_i64) else {
            return false;
        };
        let held = self.lists(rec, true) || (!self.held.is_empty() && holds_via_fd(pid, self.file));
        held && liveness(rec, me) == Liveness::Alive
    }

    /// Whether the kernel lists a lock by the record's pid (an exclusive one if `exclusive`).
    pub fn lists(&self, rec: &Map<String, Value>, exclusive: bool) -> bool {
        let Some(pid) = rec.get("pid").and_then(Value::as_i64) else {
            return false;
        };
        self.held
            .iter()
            .any(|k| k.pid == pid && (k.exclusive || !exclusive))
    }
}

/// Whether process `pid` has a descriptor that carries an exclusive `flock` lock on the file.
fn holds_via_fd(pid: i64, (dev, ino): (u64, u64)) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        // fdinfo lists the locks of the open file as "lock:\t1: FLOCK  ADVISORY  WRITE ...".
        let locks: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("lock:"))
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        if !locks.is_empty()
            && Kernel::parse(&locks, dev, ino)
                .held
                .iter()
                .any(|k| k.exclusive)
        {
            return true;
        }
    }
    false
}

/// A short description of who holds a lock, for messages.
pub fn describe(kernel: &Kernel, rec: Option<&Map<String, Value>>, me: &Me) -> String {
    if let Some(rec) = rec.filter(|r| kernel.confirms(r, me)) {
        let s = |k: &str| rec.get(k).and_then(Value::as_str).unwrap_or("?");
        let pid = rec.get("pid").and_then(Value::as_u64).unwrap_or(0);
        let command: Vec<&str> = rec
            .get("command")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        return format!(
            "held by pid {pid} on {} since {} (command: {})",
            s("host"),
            s("since"),
            command.join(" ")
        );
    }
    let pids: Vec<String> = kernel.held.iter().map(|k| k.pid.to_string()).collect();
    match kernel.mode() {
        Some("shared") => format!("held shared by pid {}", pids.join(", ")),
        Some(_) => format!("held by pid {} (no live holder record)", pids.join(", ")),
        None => "held by an unknown process".to_string(),
    }
}

/// The start time of `/proc/<pid>` in clock ticks since boot.
pub fn start_time_of(pid: &str) -> Option<u64> {
    process::start_time(pid)
}

fn boot_id() -> Option<String> {
    process::boot_id().map(str::to_string)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname(2) writes at most that.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `2026-11-26T23:27:17.123Z`.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_735_637_123);
        assert_eq!(iso8601(t), "2026-11-26T23:27:17.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn record_round_trips() {
        let me = Me {
            pid: 7,
            start_time: Some(99),
            boot_id: Some("b".into()),
            host: "h\"x".into(),
        };
        let line = me.record(&["printf".into(), "a\nb".into()]);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let rec = parse(&line).unwrap_or_default();
        assert_eq!(rec.get("pid").and_then(Value::as_u64), Some(7));
        assert_eq!(rec.get("host").and_then(Value::as_str), Some("h\"x"));
        assert_eq!(rec.get("start_time").and_then(Value::as_u64), Some(99));
        let cmd: Vec<&str> = rec["command"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(cmd, ["printf", "a\nb"]);
        let keys: Vec<&str> = rec.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["pid", "host", "boot_id", "start_time", "since", "command"]
        );
        assert!(parse(b"garbage\n").is_none());
        assert!(parse(b"{\"pid\":\"x\"}\n").is_none());
    }

    #[test]
    fn proc_locks_lines() {
        let dev = libc::makedev(0xfe, 0);
        let text = "1: FLOCK  ADVISORY  WRITE 10579 fe:00:10010679 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 10600 fe:00:10010679 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 10601 fe:00:10010679 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 10602 fe:00:42 0 EOF\n\
                    4: FLOCK  ADVISORY  READ 10603 00:2f:42 0 EOF\n";
        let k = Kernel::parse(text, dev, 10_010_679);
        assert_eq!(
            k.held,
            [KernelLock {
                pid: 10579,
                exclusive: true
            }]
        );
        assert_eq!(k.waiters, 1);
        assert_eq!(k.mode(), Some("exclusive"));
        let k = Kernel::parse(text, dev, 42);
        assert_eq!(
            k.held,
            [KernelLock {
                pid: 10602,
                exclusive: false
            }]
        );
        // No exact device match: the inode alone decides.
        let k = Kernel::parse(text, libc::makedev(0, 0x40), 42);
        assert_eq!(k.held.len(), 2);
        assert_eq!(Kernel::parse(text, dev, 1).mode(), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_gone() {
        let me = Me::get();
        let line = me.record(&[]);
        let mut rec = parse(&line).unwrap_or_default();
        assert_eq!(liveness(&rec, &me), Liveness::Alive);
        rec.insert(
            "start_time".into(),
            Value::from(me.start_time.unwrap_or(0) + 1),
        );
        assert_eq!(liveness(&rec, &me), Liveness::Gone);
        rec.insert("host".into(), Value::from("elsewhere"));
        assert_eq!(liveness(&rec, &me), Liveness::Unknown);
    }
}
