//! elf-db: SQLite transactions from JSON lines, with bound parameters, safe under contention and
//! replayable after a crash.
//!
//! The first operand is the command: `insert`, `exec`, `done`, `pending`, `retry`, `drop`,
//! `query`, `check` or `checkpoint`. The record commands (`insert`, `exec`, `done`) read
//! records on standard input, group the records already waiting into one `BEGIN IMMEDIATE`
//! transaction (group commit), and pass them on only after it has committed. The wire format of
//! each command is documented in its module: [`stmt`] for the `db` key (or the one `--key`
//! names) and its references, [`journal`] for `key`, the journal and set-aside records,
//! [`query`] for result rows.

mod batch;
pub mod conn;
mod input;
pub mod journal;
mod lean;
mod out;
mod query;
pub mod stmt;
mod value;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use elf_core::cli::{Command, Flag, Given, Kind, Matches, Operand, Operands, Tool};
use elf_core::signals::Policy as Signals;
use elf_core::{Error, Result, backoff, record};

use conn::{Options, Sync};

const FLAGS: &[Flag] = &[
    Flag::new("db", "The database file (default $ELF_DB)")
        .short('d')
        .value("PATH")
        .path()
        .doc(
            "The SQLite database file. Without it, the path in the ELF_DB environment variable is \
         used; one of the two is required. The file must exist, except for exec and insert \
         --schema, which create it (to run a schema file on a new database).",
        ),
    Flag::new(
        "busy-timeout",
        "Wait this long for a busy database (default 10s)",
    )
    .value("DURATION")
    .doc(
        "How long to wait for a database that another process has locked, before giving up \
             with exit 75 and nothing done (default 10s; ms, s, m, h or d, a bare number is seconds; \
             0 fails at once).",
    ),
    Flag::new("synchronous", "full (default) or normal")
        .value("MODE")
        .choices(&["full", "normal"])
        .doc(
            "SQLite's synchronous setting for writing commands. full (the default): a record is \
             passed on only once its transaction is on disk, and survives a power loss. normal: \
             faster; in WAL mode a power loss may undo the last transactions, never corrupt the \
             database.",
        ),
    Flag::new("batch", "At most N records per transaction (default 10000)")
        .value("N")
        .doc(
            "Group commit: the records already waiting on standard input are written in one \
         transaction, at most N of them (default 10000, from 1 to 1000000). A record is never \
         passed on before its transaction has committed; a live pipeline never waits for a \
         batch to fill.",
        ),
    Flag::new("table", "insert: plain JSON objects are rows of TABLE")
        .short('t')
        .value("TABLE")
        .doc(
            "insert: every record is a row of TABLE, its keys the columns (the sqlite-utils \
         habit). The record is passed on with \"db\":{\"table\":TABLE,\"id\":ID} added \
         (without id for a view or a WITHOUT ROWID table).",
        ),
    Flag::new("key", "insert, exec, done: statements under NAME, not db")
        .value("NAME")
        .doc(
            "insert, exec: read each record's statements from its key NAME instead of db, and \
         add the results there; a record without NAME is passed on untouched. With --journal \
         the whole record is still journaled under its \"key\", with the results of NAME's \
         statements as its ids. done: run the exec statements under NAME (none without \
         --key) in the transaction that marks the record done, and add their results there; \
         a record whose key is already done runs nothing again. NAME may not be empty, key or \
         error. Not with --table, whose result is always db.",
        ),
    Flag::new(
        "schema",
        "insert: run this schema file first (creates the database)",
    )
    .value("FILE")
    .path()
    .doc(
        "insert: run the SQL statements of FILE (a schema of CREATE ... IF NOT EXISTS \
         statements) in the run's first transaction, before its first record, so that a new \
         database gets its tables in the same transaction as its first row; the database file \
         is created when missing. A statement that fails: its status, a message naming FILE and \
         the statement's line, and nothing written. The file must not contain BEGIN, COMMIT, \
         ROLLBACK or SAVEPOINT.",
    ),
    Flag::new("journal", "insert: journal each record under its key")
        .short('j')
        .doc(
            "insert: store the whole record in the journal table elf_journal, in the same \
         transaction as its rows, keyed by its \"key\" (generated and added when missing). A \
         key already journaled inserts nothing and gets the ids of the first time. See \
         pending and done.",
        ),
    elf_core::cli::KEEP_GOING.doc(concat!(
        elf_core::keep_going_doc!(),
        "\n\ninsert, exec, done. A bad record becomes an error record (bad JSON, unknown table \
         or column, a number SQLite cannot hold, a CHECK or trigger that refuses it, \
         RAISE(ROLLBACK) included); nothing of it is written, and the records around it are. \
         Busy, I/O and permission errors concern the database, not the record: they still stop \
         the run with their status."
    )),
    Flag::new("max-line", "Longest input line accepted (default 16MiB)")
        .value("BYTES")
        .doc(
            "The longest input line accepted, in bytes (default 16777216). A longer line is a bad \
         record (exit 65).",
        ),
    Flag::new("file", "exec: run this SQL file in one transaction")
        .short('f')
        .value("PATH")
        .path()
        .doc(
            "exec: run the SQL statements of the file (a schema or a migration) in one \
         transaction instead of reading records. An error names the line of the statement \
         that failed, and nothing of the file is kept. The file must not contain BEGIN, \
         COMMIT, ROLLBACK or SAVEPOINT.",
        ),
    Flag::new("older-than", "pending: only records at least this old")
        .value("DURATION")
        .doc(
            "pending: print only the records journaled at least DURATION ago (ms, s, m, h or d; a \
         bare number is seconds), so that a recovery run leaves alone the records that a live \
         pipeline is still carrying.",
        ),
    Flag::new("set-aside", "pending: print the set-aside records instead").doc(
        "pending: print the records set aside (see --attempts) instead of the pending ones, \
         each as journaled with \"set_aside\":{\"at\":MS,\"attempts\":N,\"error\":{...}} added. \
         elf-db retry KEY puts one back; elf-db drop KEY gives it up.",
    ),
    Flag::new(
        "attempts",
        "done: set aside after N permanent failures (default 3)",
    )
    .value("N")
    .doc(
        "done: a record that reaches done carrying \"error\" is a failed attempt, counted in \
         the journal with its error. When the error is permanent (any code but 74, 75 and the \
         signal codes above 128) and the record has failed N times (default 3, from 1 to \
         1000000), it is set aside: pending no longer prints it, so that a record that can \
         never finish does not hold up the others.",
    ),
    Flag::new("param", "query: bind :NAME to VALUE (text)")
        .short('p')
        .value("NAME=VALUE")
        .repeat()
        .doc(
            "query: bind the parameter :NAME (or @NAME, $NAME) of the SQL to VALUE, as text. \
         SQLite converts text to a number where a column or LIMIT needs one; write \
         CAST(:n AS INTEGER) where it does not. May be repeated.",
        ),
    Flag::new("format", "query: json (default), tsv or csv")
        .value("FORMAT")
        .choices(&["json", "tsv", "csv"])
        .doc(
            "query: how rows are printed. json (the default): one JSON object per row. tsv: \
         fields separated by tabs, a backslash, tab, line feed and carriage return in a value \
         written \\\\, \\t, \\n and \\r. csv: fields separated by commas, quoted (RFC 4180) \
         when they hold a comma, a quote, a backslash, CR or LF, a quote doubled and a \
         backslash, CR and LF written \\\\, \\r and \\n. Either way one row is exactly one \
         line. Integers and reals are printed as SQLite prints them as text, blobs as \
         upper-case hex.",
        ),
    Flag::new("header", "query: print the column names first (tsv, csv)").doc(
        "query, with --format tsv or csv: print the column names first, as a row (a repeated \
         name gets :2, :3 appended, as in JSON).",
    ),
    Flag::new(
        "null",
        "query: how NULL prints in tsv and csv (default empty)",
    )
    .value("TEXT")
    .doc(
        "query, with --format tsv or csv: print NULL as TEXT (default: nothing, as the empty \
         string prints). \\N is the usual choice: a value that is a backslash and an N prints \
         as \\\\N. TEXT may not hold a tab, CR or LF, nor in csv a comma or a quote.",
    ),
];

static TOOL: Tool = Tool {
    name: "elf-db",
    about: "SQLite transactions from JSON lines, with bound parameters, safe under contention",
    usage: &[
        "insert [--journal] [--key NAME | --table TABLE] [--schema FILE] [OPTIONS] < RECORDS",
        "exec [--key NAME] [OPTIONS] < RECORDS",
        "exec --file SCHEMA.sql [OPTIONS]",
        "done [--key NAME] [OPTIONS] < RECORDS",
        "pending [--older-than DURATION] [--set-aside] [OPTIONS]",
        "retry KEY... [OPTIONS]",
        "drop KEY... [OPTIONS]",
        "query SQL [--param NAME=VALUE]... [--format json|tsv|csv [--header] [--null TEXT]] [OPTIONS]",
        "check [OPTIONS]",
        "checkpoint [OPTIONS]",
    ],
    flags: FLAGS,
    operands: Operands::Free,
    args: &[],
    commands: COMMANDS,
    exits: &[
        "0", "1", "64", "65", "66", "70", "74", "75", "77", "128+N", "141",
    ],
    man: include_str!("../elf-db.1.in"),
    version: env!("CARGO_PKG_VERSION"),
};

/// The whole program, as the `elf-db` binary runs it.
pub fn main() -> ExitCode {
    elf_core::run(&TOOL, Signals::Exit, run)
}

/// The record commands' flags.
const RECORD_FLAGS: [&str; 4] = ["synchronous", "batch", "keep-going", "max-line"];

/// The commands, the flags each accepts besides --db and --busy-timeout (which every command
/// takes), and their operands.
const COMMANDS: &[Command] = &[
    Command {
        name: "insert",
        help: "Insert the rows of each record's db key (or --table rows), ids added",
        flags: &[
            RECORD_FLAGS[0],
            RECORD_FLAGS[1],
            RECORD_FLAGS[2],
            RECORD_FLAGS[3],
            "table",
            "key",
            "schema",
            "journal",
        ],
        operands: &[],
    },
    Command {
        name: "exec",
        help: "Run each record's statements (or a SQL --file) in transactions",
        flags: &[
            RECORD_FLAGS[0],
            RECORD_FLAGS[1],
            RECORD_FLAGS[2],
            RECORD_FLAGS[3],
            "file",
            "key",
        ],
        operands: &[],
    },
    Command {
        name: "done",
        help: "Mark each record's key finished in the journal",
        flags: &[
            RECORD_FLAGS[0],
            RECORD_FLAGS[1],
            RECORD_FLAGS[2],
            RECORD_FLAGS[3],
            "key",
            "attempts",
        ],
        operands: &[],
    },
    Command {
        name: "pending",
        help: "Print the journaled records not yet done",
        flags: &["older-than", "set-aside"],
        operands: &[],
    },
    Command {
        name: "retry",
        help: "Put set-aside (or pending) records back to pending",
        flags: &[],
        operands: &[Operand::many("KEY", Kind::Text, "a journaled record's key")],
    },
    Command {
        name: "drop",
        help: "Mark records finished without replaying them",
        flags: &[],
        operands: &[Operand::many("KEY", Kind::Text, "a journaled record's key")],
    },
    Command {
        name: "query",
        help: "Run one read-only SQL statement and print its rows",
        flags: &["param", "format", "header", "null"],
        operands: &[Operand::one("SQL", Kind::Text, "the statement")],
    },
    Command {
        name: "check",
        help: "Check the database (PRAGMA integrity_check)",
        flags: &[],
        operands: &[],
    },
    Command {
        name: "checkpoint",
        help: "Move the write-ahead log into the database file",
        flags: &[],
        operands: &[],
    },
];

/// The default number of records per transaction.
const DEFAULT_BATCH: usize = 10_000;

/// The default number of failed attempts after which a permanent failure sets a record aside.
const DEFAULT_ATTEMPTS: i64 = 3;

fn run(m: Matches) -> Result<u8> {
    let command = TOOL.command(&m)?.name;
    let rest = &m.operands[1..];
    let wanted = usize::from(command == "query");
    let keys = matches!(command, "retry" | "drop");
    if (keys && rest.is_empty()) || (!keys && rest.len() != wanted) {
        return Err(match (command, rest.len()) {
            ("query", 0) => Error::usage("query needs the SQL to run (elf-db query 'SELECT ...')"),
            ("query", _) => Error::usage("query takes one SQL operand; quote it as one argument"),
            (_, 0) => Error::usage(format!("{command} needs the keys of journaled records")),
            _ => Error::usage(format!(
                "{command} takes no operand, found '{}'",
                elf_core::text::escape(&rest[0].to_string_lossy())
            )),
        });
    }
    let f = flags(&m)?;
    let opts = connection(&f)?;
    match command {
        "insert" => {
            if f.journal && f.table.is_some() {
                return Err(Error::usage(
                    "--journal works with the record form, not with --table",
                ));
            }
            if f.key.is_some() && f.table.is_some() {
                return Err(Error::usage(
                    "--key works with the record form, not with --table (its result is always db)",
                ));
            }
            let schema = match &f.schema {
                Some(path) => Some(stmt::SqlFile::read(path)?),
                None => None,
            };
            let job = match &f.table {
                Some(table) => batch::Job {
                    command: batch::Command::InsertRows(table.clone()),
                    key: None,
                    attempts: DEFAULT_ATTEMPTS,
                    schema,
                },
                None => batch::Job {
                    command: batch::Command::Insert { journal: f.journal },
                    key: Some(f.statement_key()),
                    attempts: DEFAULT_ATTEMPTS,
                    schema,
                },
            };
            batch::run(&opts, job, &f.stream())
        }
        "exec" => match &f.file {
            Some(file) => {
                let misplaced = [
                    ("batch", f.batch.is_some()),
                    ("keep-going", f.keep_going),
                    ("max-line", f.max_line.is_some()),
                    ("key", f.key.is_some()),
                ];
                if let Some((flag, _)) = misplaced.iter().find(|(_, given)| *given) {
                    return Err(Error::usage(format!(
                        "flag --{flag} does not apply to exec --file"
                    )));
                }
                stmt::exec_file(&opts, file)
            }
            None => {
                let job = batch::Job {
                    command: batch::Command::Exec,
                    key: Some(f.statement_key()),
                    attempts: DEFAULT_ATTEMPTS,
                    schema: None,
                };
                batch::run(&opts, job, &f.stream())
            }
        },
        "done" => {
            let job = batch::Job {
                command: batch::Command::Done,
                key: f.key.clone(),
                attempts: f.attempts.unwrap_or(DEFAULT_ATTEMPTS),
                schema: None,
            };
            batch::run(&opts, job, &f.stream())
        }
        "pending" => journal::pending(&opts, f.older_than, f.set_aside),
        "retry" | "drop" => {
            let keys = rest
                .iter()
                .map(|k| {
                    k.to_str().map(str::to_string).ok_or_else(|| {
                        Error::data(format!(
                            "key {} is not UTF-8, so it is not in the journal",
                            elf_core::text::escape(&k.to_string_lossy())
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let action = if command == "retry" {
                journal::Action::Retry
            } else {
                journal::Action::Drop
            };
            journal::settle(&opts, action, &keys)
        }
        "query" => {
            let sql = rest[0]
                .to_str()
                .ok_or_else(|| Error::usage("the SQL is not UTF-8"))?;
            query::run(&opts, sql, &f.params, f.shape()?)
        }
        "check" => query::check(&opts),
        _ => query::checkpoint(&opts),
    }
}

/// The flags, read once from the table's matches (which command each applies to is checked
/// before, against [`COMMANDS`]).
#[derive(Debug, Default)]
struct Flags {
    db: Option<PathBuf>,
    busy_timeout: Option<Duration>,
    sync: Option<Sync>,
    batch: Option<usize>,
    table: Option<String>,
    /// `--key NAME`, checked: the key holding a record's statements.
    key: Option<String>,
    schema: Option<PathBuf>,
    journal: bool,
    keep_going: bool,
    max_line: Option<usize>,
    file: Option<PathBuf>,
    older_than: Option<Duration>,
    set_aside: bool,
    attempts: Option<i64>,
    params: Vec<(String, String)>,
    format: Option<query::Format>,
    header: bool,
    /// `--null`, checked against the format once every flag is read.
    null: Option<Given>,
}

fn flags(m: &Matches) -> Result<Flags> {
    let mut f = Flags::default();
    for g in &m.flags {
        match g.name() {
            "db" => f.db = Some(PathBuf::from(g.os()?)),
            "busy-timeout" => f.busy_timeout = Some(g.with(backoff::parse_duration)?),
            "synchronous" => {
                f.sync = Some(match g.str()? {
                    "normal" => Sync::Normal,
                    _ => Sync::Full,
                });
            }
            "batch" => {
                f.batch = Some(g.with(|s| match s.parse::<usize>() {
                    Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                    _ => Err("expected a number from 1 to 1000000"),
                })?);
            }
            "table" => f.table = Some(g.str()?.to_string()),
            "key" => {
                f.key = Some(g.with(|s| match s {
                    "" => Err("the key name is empty"),
                    "key" | "error" => {
                        Err("key and error are the record's own keys, not statements")
                    }
                    _ => Ok(s.to_string()),
                })?);
            }
            "schema" => f.schema = Some(PathBuf::from(g.os()?)),
            "journal" => f.journal = true,
            "keep-going" => f.keep_going = true,
            "max-line" => {
                f.max_line = Some(g.with(|s| match s.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err("expected a positive number of bytes"),
                })?);
            }
            "file" => f.file = Some(PathBuf::from(g.os()?)),
            "older-than" => f.older_than = Some(g.with(backoff::parse_duration)?),
            "set-aside" => f.set_aside = true,
            "attempts" => {
                f.attempts = Some(g.with(|s| match s.parse::<i64>() {
                    Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                    _ => Err("expected a number from 1 to 1000000"),
                })?);
            }
            "param" => f.params.push(param(g)?),
            "format" => {
                f.format = Some(match g.str()? {
                    "tsv" => query::Format::Tsv,
                    "csv" => query::Format::Csv,
                    _ => query::Format::Json,
                });
            }
            "header" => f.header = true,
            "null" => f.null = Some(g.clone()),
            _ => return Err(g.unhandled()),
        }
    }
    Ok(f)
}

/// The connection options every command shares.
fn connection(f: &Flags) -> Result<Options> {
    let path = match &f.db {
        Some(p) => p.clone(),
        None => match std::env::var_os("ELF_DB") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => return Err(Error::usage("no database: give --db PATH or set ELF_DB")),
        },
    };
    Ok(Options {
        path,
        busy: f.busy_timeout.unwrap_or(Duration::from_secs(10)),
        sync: f.sync.unwrap_or(Sync::Full),
    })
}

impl Flags {
    fn stream(&self) -> batch::Stream {
        batch::Stream {
            batch: self.batch.unwrap_or(DEFAULT_BATCH),
            max_line: self.max_line.unwrap_or(record::DEFAULT_MAX_LINE),
            keep_going: self.keep_going,
        }
    }

    /// The key holding a record's statements (`db` when `--key` is not given).
    fn statement_key(&self) -> String {
        self.key.clone().unwrap_or_else(|| "db".to_string())
    }

    /// `--format`, `--header` and `--null` of `query`.
    fn shape(&self) -> Result<query::Shape> {
        let format = self.format.unwrap_or(query::Format::Json);
        if format == query::Format::Json {
            let misplaced = [("header", self.header), ("null", self.null.is_some())];
            if let Some((flag, _)) = misplaced.iter().find(|(_, given)| *given) {
                return Err(Error::usage(format!(
                    "--{flag} applies to --format tsv or csv"
                )));
            }
            return Ok(query::Shape::json());
        }
        let null = match &self.null {
            None => String::new(),
            Some(g) => g.with(|s| {
                let bad: &[char] = if format == query::Format::Csv {
                    &['\t', '\r', '\n', ',', '"']
                } else {
                    &['\t', '\r', '\n']
                };
                match s.find(bad) {
                    Some(_) => Err("it would not stay one field of one line"),
                    None => Ok(s.to_string()),
                }
            })?,
        };
        Ok(query::Shape {
            format,
            header: self.header,
            null,
        })
    }
}

/// `--param NAME=VALUE`.
fn param(g: &Given) -> Result<(String, String)> {
    let s = g.str()?;
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => {
            let name = name.trim_start_matches([':', '@', '$']);
            Ok((name.to_string(), value.to_string()))
        }
        _ => Err(g.bad(s, "expected NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_of_the_table_reaches_its_handler() {
        elf_core::cli::assert_every_flag_handled(&TOOL, |m| flags(&m));
    }
    use elf_core::cli;

    #[test]
    fn flag_table_is_valid() {
        assert_eq!(cli::check_table(&TOOL), Ok(()));
    }

    #[test]
    fn ages_are_the_shared_durations() {
        use elf_core::backoff::parse_duration;
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5d"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "h", "-1h", "1w", "xd"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
