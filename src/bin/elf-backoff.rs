//! The `elf-backoff` binary: all of it is in the `elf_backoff` library.

fn main() -> std::process::ExitCode {
    elf_backoff::main()
}
