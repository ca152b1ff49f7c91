//! Standard input as lines, each parsed as a record only when asked, its text kept.
//!
//! `elf_core::record::Reader` splits the lines (a final line without `\n` accepted, blank
//! lines skipped, a line over the limit a bad record that the reading goes on after) and parses
//! them with `parse_line`, the one parser of the wire format. The text of the line is kept, so
//! that a record passed on unchanged, or with one key added at its end, is written out as the
//! very text it came in as instead of being serialized again; and `insert --table` can read a
//! plain row without building a record at all (see [`crate::lean`]). That is the fast path of
//! bulk loads and of `done`.

/// Lines from standard input.
pub type Input = elf_core::record::Reader<std::io::BufReader<std::fs::File>>;
