//! The integration tests: one binary, a module per tool, plus the pipeline and docs modules.

mod elf_home;
mod util;

mod backoff;
mod commit;
mod completions;
mod db;
mod db_quiet;
mod docs;
mod examples;
mod hostile;
mod install;
mod litter;
mod lock;
mod meanings;
mod nested;
mod querypy;
mod refs;
mod remote;
mod remote_net;
mod scripts_hostile;
mod shape;
mod wrappers;
mod write;
