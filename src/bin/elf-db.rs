//! The `elf-db` binary: all of it is in the `elf_db` library.

fn main() -> std::process::ExitCode {
    elf_db::main()
}
