//! The `elf-write` binary: all of it is in the `elf_write` library.

fn main() -> std::process::ExitCode {
    elf_write::main()
}
