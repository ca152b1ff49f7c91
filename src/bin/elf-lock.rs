//! The `elf-lock` binary: all of it is in the `elf_lock` library.

// An `elf-lock L -- true` is mostly process start-up, so elf-lock skips the part of std's
// start-up it does not need (see `elf_lock::start`).
#![no_main]

// The unwinder is linked in whole from libgcc_eh.a, so the linker (which rustc runs with
// --as-needed) drops libgcc_s.so: loading it costs a start-up of its own, whose constructor
// probes the CPU with CPUID, an instruction a virtual machine traps (0.06 to 0.15 ms).
// Panics and backtraces unwind as before.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[link(name = "gcc_eh", kind = "static", modifiers = "+whole-archive")]
unsafe extern "C" {}

#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    std::process::exit(elf_lock::start())
}
