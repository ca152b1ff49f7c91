//! Process identity from `/proc`: what tells a live holder from a dead one whose pid was
//! reused. A process is the same one when its pid, its start time (field 22 of
//! `/proc/PID/stat`, in clock ticks since boot) and the boot it started in (the kernel's
//! `boot_id`) all match. elf-lock's holder records and elf-commit's `index.lock` marker both
//! use it.

use std::fs::File;
use std::io::Read;
use std::sync::OnceLock;

/// What `/proc/PID/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The state letter (`R`, `S`, `Z`...).
    pub state: u8,
    /// The parent's pid (0 for a process whose parent is outside our pid namespace).
    pub ppid: u32,
    /// When it started, in clock ticks since boot.
    pub start_time: u64,
}

/// `/proc/PID/stat` of `pid` (a number, as text), or `None` when there is no such process.
/// Reads into a stack buffer: elf-lock calls it on its start-up path.
pub fn stat(pid: &str) -> Option<Stat> {
    let mut buf = [0u8; 1024];
    let mut f = File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = f.read(&mut buf).ok()?;
    parse_stat(&buf[..n])
}

fn parse_stat(text: &[u8]) -> Option<Stat> {
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    let ppid = fields.next()?.parse().ok()?;
    // Field 22 of the whole line; the state is field 3, the parent field 4.
    let start_time = fields.nth(22 - 5)?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        start_time,
    })
}

/// The start time of process `pid` in clock ticks since boot.
pub fn start_time(pid: &str) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// This process and its ancestors, nearest first, up to the first process of our pid
/// namespace (or the first that cannot be read).
pub fn lineage() -> Vec<u32> {
    let mut chain = vec![std::process::id()];
    while chain.len() < 4096 {
        let Some(last) = chain.last().copied() else {
            break;
        };
        match stat(&last.to_string()).map(|s| s.ppid) {
            Some(p) if p != 0 && !chain.contains(&p) => chain.push(p),
            _ => break,
        }
    }
    chain
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once; `None` when the kernel does
/// not say.
pub fn boot_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        let mut buf = [0u8; 64];
        let mut f = File::open("/proc/sys/kernel/random/boot_id").ok()?;
        let n = f.read(&mut buf).ok()?;
        let s = std::str::from_utf8(&buf[..n]).ok()?.trim();
        (!s.is_empty()).then(|| s.to_string())
    })
    .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_parentheses_does_not_shift_the_fields() {
        let line = b"42 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20\n";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: b'S',
                ppid: 1,
                start_time: 777
            })
        );
        assert_eq!(parse_stat(b"42 (a) S 1"), None);
    }

    #[test]
    fn this_process_has_a_start_time_and_the_boot_an_id() {
        let me = std::process::id().to_string();
        assert!(start_time(&me).is_some());
        assert!(stat(&me).is_some_and(|s| s.state.is_ascii_uppercase()));
        assert!(boot_id().is_some_and(|id| id.len() >= 32));
        let chain = lineage();
        assert_eq!(chain.first(), Some(&std::process::id()));
        // SAFETY: getppid(2) cannot fail.
        let parent = u32::try_from(unsafe { libc::getppid() }).unwrap_or(0);
        assert_eq!(chain.get(1), Some(&parent));
    }
}
