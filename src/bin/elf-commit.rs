//! The `elf-commit` binary: all of it is in the `elf_commit` library.

fn main() -> std::process::ExitCode {
    elf_commit::main()
}
