//! flock(1)'s descriptor form, `elf-lock [-s|-x|-u] FD`: lock an open file the caller passed
//! down, and exit.

use std::fs::File;

use elf_core::{Error, Result, exit};

use crate::acquire::{self, Clock, Got};
use crate::args::Options;
use crate::holder::{self, Me};
use crate::lockfiles::{describe, gave_up};

/// flock(1)'s descriptor form: take (or with `-u` release) the lock on an open file the
/// caller passed down, and exit; the caller keeps the lock. The holder record names the
/// parent, which is the holder once elf-lock has exited.
pub fn descriptor(fd: i32, o: &Options) -> Result<u8> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl(2) F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Error::usage(format!("descriptor {fd} is not open")));
    }
    // SAFETY: the descriptor is open (checked above) and belongs to our caller, so it must not
    // be closed: ManuallyDrop keeps the File from closing it.
    let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let name = format!("descriptor {fd}");
    if o.unlock {
        // SAFETY: flock(2) on an open descriptor.
        if unsafe { libc::flock(fd, libc::LOCK_UN) } != 0 {
            return Err(Error::io(
                format_args!("unlocking {name}"),
                &std::io::Error::last_os_error(),
            ));
        }
        return Ok(exit::OK);
    }
    let mut clock = Clock::new(o.wait, !o.quiet);
    let me = Me::get();
    let mut notice = |why: Option<&str>| match why {
        Some(why) => elf_core::note(format_args!("waiting for {name}: {why}")),
        None => elf_core::note(format_args!("waiting for {name}: {}", describe(&file, &me))),
    };
    match acquire::lock(&file, o.exclusive, o.wait, &mut clock, &mut notice)? {
        Got::Yes => {}
        // Held for the caller by an enclosing elf-lock: nothing to take, no record to write.
        Got::Enclosed => return Ok(exit::OK),
        Got::No => {
            if !o.quiet {
                elf_core::note(format_args!(
                    "{name} {}: {}",
                    gave_up(o.wait),
                    describe(&file, &me)
                ));
            }
            return Ok(o.conflict);
        }
        Got::Ancestor(why) => {
            elf_core::note(format_args!("{name}: {why}"));
            return Ok(o.conflict);
        }
    }
    clock.disarm();
    let access = flags & libc::O_ACCMODE;
    let writable =
        (access == libc::O_WRONLY || access == libc::O_RDWR) && flags & libc::O_APPEND == 0;
    if o.exclusive && writable && file.metadata().is_ok_and(|m| m.is_file()) {
        let (parent, command) = Me::parent();
        if let Err(e) = holder::write(&file, &parent.record(&command)) {
            elf_core::warn(format_args!(
                "could not write the holder record into {name}: {e}"
            ));
        }
    }
    if o.verbose {
        elf_core::note(format_args!(
            "got the lock in {:.6}s",
            clock.elapsed().as_secs_f64()
        ));
    }
    Ok(exit::OK)
}
