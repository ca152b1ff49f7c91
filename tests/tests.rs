//! The integration tests: one binary, a module per tool, plus the pipeline and docs modules.

mod elf_home;
mod util;

mod backoff;
mod commit;
mod db;
mod db_quiet;
mod docs;
mod hostile;
mod lock;
mod querypy;
mod refs;
mod scripts_hostile;
mod shape;
mod wrappers;
mod write;
