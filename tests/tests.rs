//! The integration tests: one binary, a module per tool, plus the pipeline and docs modules.

mod util;

mod db;
mod docs;
