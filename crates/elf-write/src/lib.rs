//! elf-write: write, create or append to files atomically, confined to a root.
//!
//! Record form (no PATH): for each record, perform its `write` (an object or an array of them,
//! see `spec.rs`) and pass the record on with, in each write object:
//!
//! | result | meaning |
//! |---|---|
//! | `path` | the final path relative to the root, normalised (another name with `unique`) |
//! | `bytes` | the size of the content, in bytes |
//! | `created` | true when this run wrote it; false when it was already there (a replay) |
//! | `header_written` | appends only: true when this run wrote the header |
//! | `end` | appends only: the size of the file's prefix that ends with this entry |
//!
//! ```json
//! {"key":"k1","write":{"path":"m/x.md","mode":"create","unique":true,"content":"# t\n","bytes":4,"created":true}}
//! {"key":"k2","write":{"path":"m/h.md","mode":"append","header":"# H\n","content":"## H-7\n","bytes":7,"created":true,"header_written":true,"end":27}}
//! ```
//!
//! `end` marks where this record's entry (the header when written, the marker line, the
//! content) ends in the file: the prefix of `end` bytes holds the file as it was, and this
//! entry last, so a later stage can take this record's change alone while later appends
//! already follow it (elf-commit does). It is the new file's size when this run appended;
//! for an append found already done (a replay), it is found again after the marker, and is
//! left out when the content there is not this record's. An append without a key has no
//! marker, so its `end` is reported only when this run appended it.
//!
//! Values in a write object may be references to other parts of the record (`$ref`,
//! `$join`, see `elf_core::refs`), resolved just before the write; they stay in the record as
//! written, except `path`, which is replaced by the final path.
//!
//! Stream form (`elf-write PATH`): the `sponge(1)` replacement; reads all of stdin, then
//! replaces, appends to (`-a`) or creates (`--create`) PATH with the same guarantees.

mod locks;
mod ops;
pub mod spec;
mod sys;
pub mod target;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use elf_core::cli::{Flag, Kind, Matches, Operand, Operands, Tool};
use elf_core::marker::marker;
use elf_core::record::{self, Reader, Record, Writer};
use elf_core::refs;
use elf_core::signals::Policy;
use elf_core::text::escape;
use elf_core::{Error, IoContext, Result};

use crate::locks::Locks;
use crate::ops::{Applied, Files, Outcome};
use crate::spec::{Mode, Spec};
use crate::target::{RelPath, Root};

const FLAGS: &[Flag] = &[
    Flag::new("root", "Root folder the paths are relative to")
        .short('C')
        .value("DIR")
        .path()
        .doc(
            "The folder every path is relative to and confined to (default: the current folder). \
             Absolute paths and a .. that climbs above it are refused with status 65, symlinks \
             that lead out of it with 77, and nothing is written. In the stream form, PATH is then relative to \
             DIR and confined the same way; without --root, PATH is used as given.",
        ),
    Flag::new("append", "Stream form: append stdin to PATH").short('a').doc(
        "Stream form: append standard input to PATH instead of replacing it. The old content and \
         the new are written to a temporary file renamed over PATH, under PATH's lock.",
    ),
    Flag::new("create", "Stream form: refuse to overwrite PATH").doc(
        "Stream form: make PATH, which must not exist. If it exists with exactly the same \
         content, nothing is done (status 0); with other content, status 77.",
    ),
    Flag::new("unique", "Stream form: with --create, pick a free name").doc(
        "Stream form, with --create: when PATH exists with other content, use the first free \
         name among NAME-2.EXT, NAME-3.EXT, ... and print the path written on standard output.",
    ),
    Flag::new("key", "Stream form: idempotency key of an append").value("KEY").doc(
        "Stream form, with --append: mark the entry with KEY (see IDEMPOTENT APPENDS); if the \
         marker is already in the file, nothing is appended.",
    ),
    Flag::new("file-mode", "Stream form: permissions of a new file").short('m').value("MODE").doc(
        "Stream form: octal permissions of PATH if it is new (for example 0600), set exactly, \
         without the umask. The default is 0644 minus the umask. An existing file keeps its mode.",
    ),
    Flag::new("no-sync", "Skip the fsyncs (unsafe on power loss)").doc(
        "Do not fsync the new file and its folder. Readers still never see a partial file and a \
         killed writer leaves none, but after a power loss or a kernel crash a file may be empty \
         or hold its old content. Faster; use it for caches and tests, not for records.",
    ),
    Flag::new("timeout", "How long to wait for a file's lock").short('w').value("DURATION").doc(
        "How long to wait for the lock of a file that another writer holds, as a number of \
         seconds or with ms, s, m, h or d (default 60s; 0 tries once). Past it the record fails with \
         status 75, which elf-backoff retries.",
    ),
    Flag::new("lock-dir", "Folder for the lock files").value("DIR").path().doc(
        "Keep the lock files in DIR instead of the default place (see LOCKS). Every writer of the \
         same files must use the same folder; a folder shared by several users lets their \
         writers exclude each other.",
    ),
    elf_core::cli::KEEP_GOING.doc(concat!(
        elf_core::keep_going_doc!(),
        "\n\nRecord form only. Every failure of a record becomes an error record: a bad write \
         object, a refused path, an I/O error, a lock timeout."
    )),
    Flag::new("max-line", "Longest input line accepted").value("BYTES").doc(
        "Record form: the longest input line accepted, in bytes (default 16777216). A longer line \
         is a bad record (status 65).",
    ),
];

static TOOL: Tool = Tool {
    name: "elf-write",
    about: "Write, create or append to files atomically, confined to a root",
    usage: &[
        "[OPTIONS] < RECORDS",
        "[OPTIONS] [-a | --create [--unique]] PATH < CONTENT",
    ],
    flags: FLAGS,
    operands: Operands::Free,
    args: &[Operand::one(
        "PATH",
        Kind::File,
        "the file to write standard input to (the stream form)",
    )],
    commands: &[],
    exits: &[
        "0", "64", "65", "66", "70", "74", "75", "77", "128+N", "141",
    ],
    man: include_str!("../elf-write.1.in"),
    version: env!("CARGO_PKG_VERSION"),
};

/// The whole program, as the `elf-write` binary runs it.
pub fn main() -> ExitCode {
    elf_core::run(&TOOL, Policy::Exit, run)
}

/// The flags, read once from the table's matches.
#[derive(Debug, Default)]
struct Options {
    root: Option<PathBuf>,
    append: bool,
    create: bool,
    unique: bool,
    key: Option<String>,
    file_mode: Option<u32>,
    no_sync: bool,
    timeout: Option<Duration>,
    lock_dir: Option<PathBuf>,
    keep_going: bool,
    max_line: Option<usize>,
    operands: Vec<std::ffi::OsString>,
}

fn options(m: Matches) -> Result<Options> {
    let mut o = Options {
        operands: m.operands,
        ..Options::default()
    };
    for g in &m.flags {
        match g.name() {
            "root" => o.root = Some(PathBuf::from(g.os()?)),
            "append" => o.append = true,
            "create" => o.create = true,
            "unique" => o.unique = true,
            "key" => o.key = Some(g.str()?.to_owned()),
            "file-mode" => o.file_mode = Some(g.with(spec::parse_file_mode)?),
            "no-sync" => o.no_sync = true,
            "timeout" => o.timeout = Some(g.with(elf_core::backoff::parse_duration)?),
            "lock-dir" => o.lock_dir = Some(PathBuf::from(g.os()?)),
            "keep-going" => o.keep_going = true,
            "max-line" => o.max_line = Some(g.parse::<usize>()?),
            _ => return Err(g.unhandled()),
        }
    }
    Ok(o)
}

fn run(m: Matches) -> Result<u8> {
    sys::ignore_sigxfsz();
    let mut o = options(m)?;
    let sync = !o.no_sync;
    let timeout = o.timeout.unwrap_or(Duration::from_secs(60));
    let locks = Locks::new(o.lock_dir.take(), Some(timeout));
    match std::mem::take(&mut o.operands).as_slice() {
        [] => records(&o, locks, sync),
        [path] => stream(&o, path, locks, sync),
        _ => Err(Error::usage("give at most one PATH (see --help)")),
    }
}

/// The record form.
fn records(o: &Options, locks: Locks, sync: bool) -> Result<u8> {
    let stream_only = [
        ("append", o.append),
        ("create", o.create),
        ("unique", o.unique),
        ("key", o.key.is_some()),
        ("file-mode", o.file_mode.is_some()),
    ];
    if let Some((f, _)) = stream_only.iter().find(|(_, given)| *given) {
        return Err(Error::usage(format!(
            "--{f} is for the stream form (elf-write PATH)"
        )));
    }
    let limit = o.max_line.unwrap_or(record::DEFAULT_MAX_LINE);
    let keep_going = o.keep_going;
    let root = o.root.clone().unwrap_or_else(|| PathBuf::from("."));
    let mut files = Files::new(Root::open(&root)?, locks, sync);
    let mut input = Reader::stdin(limit)?;
    let mut out = Writer::stdout();
    // Records done but not yet passed on. Their replaces and appends wait in temporary files
    // and their folders wait unsynced, so that a stream of records that are already waiting
    // costs one syncfs and one folder fsync per batch, not an fsync of each.
    let mut batch: Vec<Done> = Vec::new();
    while let Some(item) = input.next_record() {
        let failure = match item {
            Ok((line, mut rec)) => loop {
                match process(&mut files, &mut rec) {
                    Ok(Step::FlushFirst) => {
                        pass_on(&mut files, &mut out, &mut batch, keep_going)?;
                    }
                    Ok(Step::Done) => {
                        batch.push(Done {
                            rec,
                            line,
                            deferred: None,
                        });
                        break None;
                    }
                    Ok(Step::Deferred(o)) => {
                        batch.push(Done {
                            rec,
                            line,
                            deferred: Some(o),
                        });
                        break None;
                    }
                    Err(e) => break Some((e.at_line(line), Some(rec))),
                }
            },
            Err(e) => Some((e, None)),
        };
        if let Some((e, rec)) = failure {
            if !keep_going || e.is_broken_pipe() {
                pass_on(&mut files, &mut out, &mut batch, keep_going)?;
                return Err(e);
            }
            elf_core::note(&e);
            let mut rec = rec.unwrap_or_default();
            record::set_error(&mut rec, TOOL.name, &e);
            batch.push(Done {
                rec,
                line: 0,
                deferred: None,
            });
        }
        if batch.len() >= BATCH || !input.ready() {
            pass_on(&mut files, &mut out, &mut batch, keep_going)?;
        }
    }
    pass_on(&mut files, &mut out, &mut batch, keep_going)?;
    // Under --keep-going every failure became an error record: the run succeeded.
    Ok(elf_core::exit::OK)
}

/// The most records done before they are synced and passed on.
const BATCH: usize = 64;

/// A record done, waiting to be passed on.
struct Done {
    rec: Record,
    line: u64,
    /// Its one write, when it waits in the batch: the results to add once it is done.
    deferred: Option<Outcome>,
}

/// Finishes the batch's pending writes and syncs the folders written, then passes the batch
/// on. A pending write that failed fails its record as if it had failed when applied: the
/// run stops there (records after it undone and not passed on), or under `--keep-going` the
/// record is passed on with `error`.
fn pass_on(
    files: &mut Files,
    out: &mut Writer<std::io::StdoutLock<'static>>,
    batch: &mut Vec<Done>,
    keep_going: bool,
) -> Result<()> {
    let mut results = files.flush(!keep_going).into_iter();
    files.sync_folders()?;
    for d in batch.drain(..) {
        let mut rec = d.rec;
        if let Some(outcome) = d.deferred {
            match results.next() {
                Some(Ok(())) => {
                    if let Some(Value::Object(obj)) = rec.get_mut("write") {
                        put_results(obj, &outcome);
                    }
                }
                Some(Err(e)) => {
                    let e = e.at_line(d.line);
                    if !keep_going {
                        return Err(e);
                    }
                    elf_core::note(&e);
                    record::set_error(&mut rec, TOOL.name, &e);
                }
                None => return Err(Error::internal("a pending write without its result")),
            }
        }
        out.write(&rec)?;
    }
    Ok(())
}

/// What [`process`] did with a record.
enum Step {
    /// Its writes are done (or it had none).
    Done,
    /// Its one write waits in the batch, with these results.
    Deferred(Outcome),
    /// Nothing yet: the batch must be finished first.
    FlushFirst,
}

/// Performs a record's writes in order, adding each one's results as it is done. A record
/// with one replace or append may leave it pending in the batch.
fn process(files: &mut Files, rec: &mut Record) -> Result<Step> {
    if record::has_error(rec) {
        return Ok(Step::Done);
    }
    let specs = match rec.get("write") {
        None | Some(Value::Null) => return Ok(Step::Done),
        Some(v) => spec::parse(resolve(rec, v)?.as_ref())?,
    };
    let key = if specs.iter().any(|s| s.mode == Mode::Append) {
        spec::record_key(rec)?.map(str::to_owned)
    } else {
        None
    };
    let many = matches!(rec.get("write"), Some(Value::Array(_)));
    if many && files.has_pending() {
        // Its writes are done one by one, after the batch (whose descriptors it may need).
        return Ok(Step::FlushFirst);
    }
    if many {
        for (i, s) in specs.iter().enumerate() {
            files
                .check(s)
                .map_err(|e| e.context(format_args!("write[{i}]")))?;
        }
    }
    for (i, s) in specs.iter().enumerate() {
        let marker = key.as_deref().map(|k| marker(k, many.then_some(i)));
        let applied = files.apply_in_batch(s, marker.as_deref(), !many);
        let applied = if many {
            applied.map_err(|e| e.context(format_args!("write[{i}]")))?
        } else {
            applied?
        };
        let outcome = match applied {
            Applied::Done(o) => o,
            Applied::Deferred(o) => return Ok(Step::Deferred(o)),
            // Only the first write can meet a batch (nothing is pending after it).
            Applied::FlushFirst => return Ok(Step::FlushFirst),
        };
        let slot = match rec.get_mut("write") {
            Some(Value::Array(items)) => items.get_mut(i),
            other => other,
        };
        if let Some(Value::Object(obj)) = slot {
            put_results(obj, &outcome);
        }
    }
    Ok(Step::Done)
}

/// The `write` value with its references resolved against the record. The value itself, and
/// each element of an array, must not be a reference: the results go into the object as
/// written.
fn resolve<'a>(rec: &Record, v: &'a Value) -> Result<std::borrow::Cow<'a, Value>> {
    let whole = |m: &serde_json::Map<String, Value>| {
        m.contains_key(refs::REF) || m.contains_key(refs::JOIN)
    };
    let place = match v {
        Value::Object(m) if whole(m) => Some("write".to_string()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, x)| match x {
            Value::Object(m) if whole(m) => Some(format!("write[{i}]")),
            _ => None,
        }),
        _ => None,
    };
    if let Some(place) = place {
        return Err(Error::data(format!(
            "{place}: must be a write object, not a reference (references go in its fields)"
        )));
    }
    refs::resolve(rec, v).map_err(|e| e.context("write"))
}

fn put_results(obj: &mut serde_json::Map<String, Value>, o: &Outcome) {
    obj.insert("path".into(), Value::from(o.path.display()));
    obj.insert("bytes".into(), Value::from(o.bytes));
    obj.insert("created".into(), Value::from(o.created));
    // Appends only (`header_written` is set for every append), so that another write's own
    // field named `end` is kept as it is.
    if let Some(h) = o.header_written {
        obj.insert("header_written".into(), Value::from(h));
        match o.end {
            Some(end) => obj.insert("end".into(), Value::from(end)),
            None => obj.shift_remove("end"),
        };
    }
}

/// The stream form: `elf-write [-a | --create [--unique]] PATH < CONTENT`.
fn stream(o: &Options, operand: &OsStr, locks: Locks, sync: bool) -> Result<u8> {
    let record_only = [
        ("keep-going", o.keep_going),
        ("max-line", o.max_line.is_some()),
    ];
    if let Some((f, _)) = record_only.iter().find(|(_, given)| *given) {
        return Err(Error::usage(format!(
            "--{f} is for the record form (elf-write without PATH)"
        )));
    }
    let (append, create, unique) = (o.append, o.create, o.unique);
    if append && create {
        return Err(Error::usage("--append and --create do not go together"));
    }
    if unique && !create {
        return Err(Error::usage("--unique needs --create"));
    }
    if o.key.is_some() && !append {
        return Err(Error::usage("--key needs --append"));
    }
    let key = o.key.as_deref();
    let file_mode = o.file_mode;
    let confined = match &o.root {
        Some(dir) => Some((dir.clone(), RelPath::parse(operand)?)),
        None => None,
    };
    let content = read_stdin()?;
    // `resolved`: PATH with symlinks at its end followed, when not confined to --root.
    let (root, rel, resolved) = match confined {
        Some((dir, rel)) => (Root::open(&dir)?, rel, None),
        None => {
            let (root, rel, target) = split_operand(Path::new(operand))?;
            (root, rel, Some(target))
        }
    };
    let mode = if append {
        Mode::Append
    } else if create {
        Mode::Create
    } else {
        Mode::Replace
    };
    let spec = Spec {
        path: rel,
        content,
        mode,
        unique,
        header: None,
        file_mode,
    };
    let mut files = Files::new(root, locks, sync);
    let marker = key.map(|k| marker(k, None));
    let outcome = files.apply(&spec, marker.as_deref())?;
    files.sync_folders()?;
    if unique {
        let shown = match &resolved {
            None => PathBuf::from(outcome.path.display()),
            Some(target) => target.with_file_name(&outcome.path.name),
        };
        let mut line = shown.into_os_string().into_encoded_bytes();
        line.push(b'\n');
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&line)
            .and_then(|()| stdout.flush())
            .ctx("writing output")?;
    }
    Ok(elf_core::exit::OK)
}

/// All of standard input, read in few system calls (its size is known when it is a file).
fn read_stdin() -> Result<Vec<u8>> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let size = sys::fstat(stdin.as_fd())
        .ok()
        .filter(|st| sys::kind(st) == libc::S_IFREG)
        .map_or(64 << 10, |st| {
            usize::try_from(st.st_size).unwrap_or(0).saturating_add(1)
        });
    let mut content = Vec::with_capacity(size);
    stdin
        .lock()
        .read_to_end(&mut content)
        .ctx("reading standard input")?;
    Ok(content)
}

/// Without --root, PATH's folder is the root and its last component the name; a symlink at
/// PATH is followed (its target is what gets replaced).
fn split_operand(path: &Path) -> Result<(Root, RelPath, PathBuf)> {
    let shown = || escape(&path.to_string_lossy()).into_owned();
    let target = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(path).map_err(|e| {
            Error::permission(format!(
                "{}: a symlink whose target cannot be used: {e}",
                shown()
            ))
        })?,
        _ => path.to_path_buf(),
    };
    let name = target
        .file_name()
        .filter(|n| *n != OsStr::new(".."))
        .ok_or_else(|| Error::usage(format!("{}: PATH must name a file", shown())))?;
    if name.len() > target::NAME_MAX {
        return Err(target::too_long(&shown(), name.len()));
    }
    let mut folder = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Missing folders are made, as in the record form: the nearest folder that exists is the
    // one opened, and the rest of the way is made beneath it.
    let mut missing = Vec::new();
    while let Err(e) = std::fs::symlink_metadata(folder) {
        let (Some(up), Some(last), std::io::ErrorKind::NotFound) =
            (folder.parent(), folder.file_name(), e.kind())
        else {
            break;
        };
        missing.push(last.to_os_string());
        folder = if up.as_os_str().is_empty() {
            Path::new(".")
        } else {
            up
        };
    }
    missing.reverse();
    let rel = RelPath {
        parents: missing,
        name: name.to_os_string(),
    };
    Ok((Root::open_as(folder, "folder")?, rel, target.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_of_the_table_reaches_its_handler() {
        elf_core::cli::assert_every_flag_handled(&TOOL, options);
    }

    #[test]
    fn flag_table_is_valid() {
        assert_eq!(elf_core::cli::check_table(&TOOL), Ok(()));
    }
}
