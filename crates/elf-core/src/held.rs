//! Locks an enclosing holder already holds for this process tree: nested locks.
//!
//! `elf-lock .git/claude-lock -- record-failure.sh` runs a script that takes
//! `.git/claude-lock` itself (through elf-commit). Its lock file is a new open file, so
//! `flock(2)` sees a second taker, and the script would wait on its own ancestor until its
//! timeout. So a holder passes its locks down:
//!
//! - elf-lock, when its command inherits the locks (not `-o`), adds one entry per lock it took
//!   to the command's environment: `ELF_LOCK_HELD=DEV:INO:PID[,DEV:INO:PID...]`, the lock
//!   file's device and inode (as `stat(2)` gives them, in decimal) and the pid that took it.
//! - A process asked for a lock that another process holds looks at who holds it
//!   ([`enclosing`]). The lock counts as held, and is not taken again (nor released), when an
//!   entry names the file and the hold is confirmed by the kernel: the entry's pid is this
//!   process or one of its ancestors and `/proc/locks` lists that pid holding the file in a
//!   mode that covers the request (exclusive covers both), or one of this process's own
//!   descriptors (inherited from the holder) carries such a lock (`/proc/self/fdinfo`).
//! - A lock that cannot be re-entered (the variable does not name it, or an exclusive lock is
//!   asked for under a shared hold) is reported at once, instead of waited for, when its
//!   holder cannot release it while we wait: this process itself, through a descriptor it
//!   inherited, or an enclosing elf-lock (one of our ancestors), which holds its locks until
//!   its command, our ancestor, has exited. Another ancestor holding the lock may release it
//!   while we wait (a test harness pausing its child), so its hold is waited for as usual.
//!
//! The variable is only a consent, never a proof: a forged entry for a lock that no process of
//! our ancestry holds changes nothing (the kernel does not confirm it), and the lock is waited
//! for as usual.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use crate::process;

/// The environment variable through which a holder passes its locks down.
pub const VAR: &str = "ELF_LOCK_HELD";

/// A `flock(2)` lock (or a wait for one) the kernel lists on a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// The process that took the lock (or waits for it).
    pub pid: i64,
    pub exclusive: bool,
    /// A wait (`->` in `/proc/locks`), not a hold.
    pub waiter: bool,
}

/// Parses `/proc/locks` text (or the `lock:` lines of an fdinfo file), keeping the `FLOCK`
/// entries of the file `(dev, ino)`.
///
/// A line reads `1: FLOCK  ADVISORY  WRITE 4242 fe:00:10010679 0 EOF` (major and minor in
/// hex, the inode in decimal); a waiter's line has `->` after the number. The device the
/// kernel names is the superblock's, which on btrfs subvolumes and overlay mounts differs from
/// what stat(2) reports; when no entry matches the device exactly, entries matching the inode
/// alone are taken.
///
/// A hold is listed once per process and mode: the kernel hands the list out a page at a time
/// and resumes by position, so a lock taken elsewhere between two reads shifts the list and can
/// show one entry twice (and one process holding a file twice tells a reader nothing more).
pub fn parse_proc_locks(text: &str, dev: u64, ino: u64) -> Vec<Listed> {
    let (major, minor) = (u64::from(libc::major(dev)), u64::from(libc::minor(dev)));
    let mut exact = Vec::new();
    let mut loose = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace().skip(1).peekable();
        let waiter = f.peek() == Some(&"->");
        if waiter {
            f.next();
        }
        let (Some("FLOCK"), Some(_), Some(kind), Some(pid), Some(id)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let mut id = id.split(':');
        let (Some(ma), Some(mi), Some(i)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        if i.parse::<u64>().ok() != Some(ino) {
            continue;
        }
        let entry = Listed {
            pid: pid.parse().unwrap_or(0),
            exclusive: kind == "WRITE",
            waiter,
        };
        let add = |list: &mut Vec<Listed>| {
            if entry.waiter || !list.contains(&entry) {
                list.push(entry);
            }
        };
        if u64::from_str_radix(ma, 16).ok() == Some(major)
            && u64::from_str_radix(mi, 16).ok() == Some(minor)
        {
            add(&mut exact);
        }
        add(&mut loose);
    }
    if exact.is_empty() { loose } else { exact }
}

/// The `flock` locks (and waits) the kernel lists on the file `(dev, ino)`.
///
/// The kernel hands `/proc/locks` out a page per read(2) and resumes by position, so when
/// locks listed before ours are released between two reads, our entry can be skipped (on a
/// machine where other processes take and release locks all the time, one read in five can
/// miss it). A read that finds no lock on the file is therefore repeated, up to
/// [`PROC_LOCKS_READS`] reads in all, yielding the processor between them, before the file is
/// taken to be free; a file that is held costs one read.
pub fn proc_locks(dev: u64, ino: u64) -> io::Result<Vec<Listed>> {
    let mut listed = Vec::new();
    for i in 0..PROC_LOCKS_READS {
        if i > 0 {
            std::thread::yield_now();
        }
        let text = std::fs::read_to_string("/proc/locks")?;
        listed = parse_proc_locks(&text, dev, ino);
        if listed.iter().any(|l| !l.waiter) {
            break;
        }
    }
    Ok(listed)
}

/// How many times [`proc_locks`] reads `/proc/locks` before it takes a file to be free.
pub const PROC_LOCKS_READS: usize = 10;

/// The lock one of this process's own descriptors carries on the file `(dev, ino)`:
/// `Some(true)` exclusive, `Some(false)` shared (fdinfo lists only the locks of that very open
/// file, so a descriptor inherited from a holder shows the holder's lock).
pub fn own_lock(dev: u64, ino: u64) -> Option<bool> {
    let dir = std::fs::read_dir("/proc/self/fdinfo").ok()?;
    let mut found = None;
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let locks: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("lock:"))
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        if locks.is_empty() {
            continue;
        }
        for l in parse_proc_locks(&locks, dev, ino) {
            if !l.waiter {
                found = Some(found.unwrap_or(false) || l.exclusive);
            }
        }
    }
    found
}

/// One entry of [`VAR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub dev: u64,
    pub ino: u64,
    pub pid: i64,
}

impl Entry {
    /// The entry for a lock file this process has just locked.
    pub fn mine(meta: &std::fs::Metadata) -> Entry {
        Entry {
            dev: meta.dev(),
            ino: meta.ino(),
            pid: i64::from(std::process::id()),
        }
    }
}

/// The entries of a value of [`VAR`]; malformed ones are ignored.
pub fn parse(value: &str) -> Vec<Entry> {
    value
        .split(',')
        .filter_map(|e| {
            let mut f = e.trim().split(':');
            let entry = Entry {
                dev: f.next()?.parse().ok()?,
                ino: f.next()?.parse().ok()?,
                pid: f.next()?.parse().ok()?,
            };
            f.next().is_none().then_some(entry)
        })
        .collect()
}

/// The value of [`VAR`] to pass down: the entries this process was given (well-formed ones
/// only) and `added`.
pub fn pass_down(added: &[Entry]) -> String {
    let given = std::env::var(VAR).map(|v| parse(&v)).unwrap_or_default();
    let mut all: Vec<Entry> = given;
    for e in added {
        if !all.contains(e) {
            all.push(*e);
        }
    }
    all.iter()
        .map(|e| format!("{}:{}:{}", e.dev, e.ino, e.pid))
        .collect::<Vec<_>>()
        .join(",")
}

/// What an enclosing holder means for a lock this process wants and another process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enclosing {
    /// No process of our ancestry holds it: a wait is a wait on someone else.
    No,
    /// An ancestor (or this process through an inherited descriptor) holds it in a mode that
    /// covers the request, and passed it down: it counts as held, and is neither taken nor
    /// released.
    Held,
    /// An ancestor holds it, and the request cannot re-enter the hold: waiting for it would
    /// never end. The text says who and why, for a message.
    Deadlock(String),
    /// Another ancestor (not an enclosing elf-lock) holds it without passing it down: it may
    /// release it (a harness pausing its child does), so it is waited for, but the waiter says
    /// so at once. The text says who, for that message.
    Ancestor(String),
}

/// Whether the lock on `file` (which this process failed to take at once) is held by its own
/// ancestry, and whether it may count as held (see the module documentation).
pub fn enclosing(file: &File, exclusive: bool) -> Enclosing {
    let Ok(meta) = file.metadata() else {
        return Enclosing::No;
    };
    let (dev, ino) = (meta.dev(), meta.ino());
    let listed: Vec<Listed> = proc_locks(dev, ino)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| !l.waiter)
        .collect();
    let lineage: Vec<i64> = process::lineage().into_iter().map(i64::from).collect();
    let own = own_lock(dev, ino);
    let me = i64::from(std::process::id());
    let covers = |x: bool| x || !exclusive;
    let entries = std::env::var(VAR).map(|v| parse(&v)).unwrap_or_default();
    let confirmed = entries.iter().any(|e| {
        e.dev == dev
            && e.ino == ino
            && ((lineage.contains(&e.pid)
                && listed.iter().any(|l| l.pid == e.pid && covers(l.exclusive)))
                || own.is_some_and(covers))
    });
    if confirmed {
        return Enclosing::Held;
    }
    // Who, of our ancestry, holds it for as long as we wait: this process itself, through a
    // descriptor it inherited, or an enclosing elf-lock, which holds its locks until its
    // command (our ancestor, or us) has exited. Any other ancestor may release the lock while
    // we wait (a test harness pausing its child does), so its hold is waited for as usual.
    let comm = |p: i64| {
        let c = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        c.trim().to_string()
    };
    let holder = own.map(|x| (me, x, String::new())).or_else(|| {
        lineage.iter().find_map(|&p| {
            let mut mine = listed.iter().filter(|l| l.pid == p).peekable();
            mine.peek()?;
            let name = comm(p);
            (name == "elf-lock").then(|| (p, mine.any(|l| l.exclusive), name))
        })
    });
    let Some((pid, held_exclusive, name)) = holder else {
        // Any other ancestor holding it: waited for, and said at once.
        return lineage
            .iter()
            .filter(|&&p| p != me)
            .find(|&&p| listed.iter().any(|l| l.pid == p))
            .map_or(Enclosing::No, |&p| {
                Enclosing::Ancestor(format!(
                    "held by pid {p} ({}), an ancestor of this process, which has not passed it down ({VAR}); waiting for it to release it",
                    comm(p)
                ))
            });
    };
    let who = if pid == me {
        "this process through an inherited descriptor".to_string()
    } else {
        format!("pid {pid} ({name}), an ancestor of this process")
    };
    Enclosing::Deadlock(if !held_exclusive && exclusive {
        format!("held shared by {who}: an exclusive lock under it would wait forever")
    } else {
        format!("held by {who}, not passed down ({VAR}): waiting for it would never end")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_malformed_ones_are_dropped() {
        assert_eq!(
            parse("64768:42:7, 1:2:3,x:1:2,1:2,1:2:3:4,,"),
            [
                Entry {
                    dev: 64768,
                    ino: 42,
                    pid: 7
                },
                Entry {
                    dev: 1,
                    ino: 2,
                    pid: 3
                }
            ]
        );
    }

    #[test]
    fn proc_locks_lines() {
        let dev = libc::makedev(0xfe, 0);
        let text = "1: FLOCK  ADVISORY  WRITE 10579 fe:00:10010679 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 10600 fe:00:10010679 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 10601 fe:00:10010679 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 10602 fe:00:42 0 EOF\n\
                    4: FLOCK  ADVISORY  READ 10603 00:2f:42 0 EOF\n";
        assert_eq!(
            parse_proc_locks(text, dev, 10_010_679),
            [
                Listed {
                    pid: 10579,
                    exclusive: true,
                    waiter: false
                },
                Listed {
                    pid: 10600,
                    exclusive: true,
                    waiter: true
                }
            ]
        );
        assert_eq!(parse_proc_locks(text, dev, 42).len(), 1);
        // No exact device match: the inode alone decides.
        assert_eq!(parse_proc_locks(text, libc::makedev(0, 0x40), 42).len(), 2);
        assert!(parse_proc_locks(text, dev, 1).is_empty());
    }

    #[test]
    fn a_hold_shown_twice_by_a_shifted_read_is_listed_once() {
        let dev = libc::makedev(0xfe, 0);
        let text = "1: FLOCK  ADVISORY  WRITE 14495 fe:00:42 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 14500 fe:00:42 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 14495 fe:00:42 0 EOF\n\
                    3: -> FLOCK  ADVISORY  WRITE 14500 fe:00:42 0 EOF\n";
        let listed = parse_proc_locks(text, dev, 42);
        assert_eq!(listed.iter().filter(|l| !l.waiter).count(), 1);
        assert_eq!(listed.iter().filter(|l| l.waiter).count(), 2);
    }

    #[test]
    fn a_lock_held_by_this_process_on_another_descriptor_is_not_passed_down_without_the_variable() {
        let dir = std::env::temp_dir().join(format!("elf-core-held-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("l");
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .expect("open")
        };
        let (a, b) = (open(), open());
        // SAFETY: flock(2) on a descriptor this test owns.
        let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&a), libc::LOCK_EX) };
        assert_eq!(r, 0);
        // The variable is not set by the test harness for this file: the hold is ours, and
        // not passed down, so a second taker would wait on itself.
        assert!(matches!(enclosing(&b, true), Enclosing::Deadlock(_)));
        drop(a);
        assert_eq!(enclosing(&b, true), Enclosing::No);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
