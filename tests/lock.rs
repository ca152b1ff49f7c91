//! elf-lock integration tests.
