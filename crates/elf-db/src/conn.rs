//! Connections: opening, pragmas, the write transaction, the statement guard, and the mapping
//! of SQLite's errors to exit statuses.
//!
//! Every writing connection is in WAL mode with `busy_timeout`, `synchronous=FULL` (unless
//! `--synchronous normal`) and foreign keys on, and every writing transaction starts with
//! `BEGIN IMMEDIATE`: the write lock is taken first, so there is no read-to-write upgrade and no
//! SQLITE_BUSY deadlock. Reading connections are opened `SQLITE_OPEN_READONLY` with
//! `query_only`.

use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use elf_core::Error;
use elf_core::backoff::{Jitter, Policy, Waiter};
pub use elf_core::paths::show;
use rusqlite::{Connection, ErrorCode, OpenFlags, ffi};

/// SQLite's `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// fsync at every commit (the default).
    Full,
    /// WAL's `NORMAL`: durable up to the last checkpoint or so.
    Normal,
}

/// How a connection is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read and write an existing database.
    Write,
    /// Read and write, creating the file when missing.
    Create,
    /// Read only.
    Read,
    /// Read and write an existing database, leaving its journal mode alone (checkpoint).
    Maintain,
}

/// The options every command shares.
#[derive(Debug, Clone)]
pub struct Options {
    /// The database file.
    pub path: PathBuf,
    /// `busy_timeout`.
    pub busy: Duration,
    /// `synchronous`.
    pub sync: Sync,
}

/// What the statements being prepared are allowed to do (see [`guard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Guard {
    /// elf-db's own statements: anything.
    Own = 0,
    /// SQL from a record: no transaction control, ATTACH, DETACH or PRAGMA.
    Record = 1,
    /// An `exec --file` schema: no transaction control, ATTACH or DETACH.
    File = 2,
    /// A `query`: no transaction control, ATTACH or DETACH (and the connection is read-only).
    Query = 3,
}

static GUARD: AtomicU8 = AtomicU8::new(Guard::Own as u8);

/// Sets what the SQL prepared and run from now on may do, until the next call.
///
/// The process has one connection and one thread, so one global is enough.
pub fn guard(g: Guard) {
    GUARD.store(g as u8, Ordering::SeqCst);
}

/// The authorizer: refuses, in user SQL, the statements that would break elf-db's own
/// transaction (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) or reach other files (ATTACH,
/// DETACH). SQL from records may not run PRAGMAs either.
unsafe extern "C" fn authorize(
    _user: *mut c_void,
    action: c_int,
    _a: *const c_char,
    _b: *const c_char,
    _db: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    let g = GUARD.load(Ordering::SeqCst);
    let control = matches!(
        action,
        ffi::SQLITE_TRANSACTION | ffi::SQLITE_SAVEPOINT | ffi::SQLITE_ATTACH | ffi::SQLITE_DETACH
    );
    let denied = match g {
        0 => false,
        1 => control || action == ffi::SQLITE_PRAGMA,
        _ => control,
    };
    if denied {
        ffi::SQLITE_DENY
    } else {
        ffi::SQLITE_OK
    }
}

/// Opens the database.
///
/// Problems with the file itself show here, named, rather than at the first statement: a
/// database that cannot be opened, or whose `-shm` or `-wal` cannot be created, is reported
/// with the system's reason (`disk I/O error: No space left on device`, `unable to open
/// database file: Read-only file system`), and its status follows that reason (74, or 77 when
/// permission is denied). A file that is not a database is left for the first statement to
/// report (so that `check` can answer "no" about it).
///
/// A reading connection on a read-only file system, where SQLite cannot create the `-shm` a
/// WAL database needs, reads the file as immutable instead, when there is no WAL content it
/// would miss: nothing can write that file through this mount.
pub fn open(o: &Options, mode: Mode) -> elf_core::Result<Connection> {
    if mode != Mode::Create && !o.path.exists() {
        return Err(Error::no_input(format!(
            "database {} does not exist",
            show(&o.path)
        )));
    }
    if mode == Mode::Read {
        if let Some(lock) = quiet_wal(&o.path) {
            if let Ok(conn) = open_as(o, mode, true) {
                // Held until the process ends: elf-db opens one database a run.
                std::mem::forget(lock);
                return Ok(conn);
            }
        }
    }
    match open_as(o, mode, false) {
        Err(Fallback::Immutable(first)) => open_as(o, mode, true).map_err(|e| match e {
            Fallback::Immutable(_) => first,
            Fallback::No(e) => e,
        }),
        Err(Fallback::No(e)) => Err(e),
        Ok(conn) => Ok(conn),
    }
}

/// SQLite's unix locks: the range whose read lock is a SHARED lock, and whose write lock is
/// the EXCLUSIVE one.
const SHARED_FIRST: i64 = 0x4000_0002;
const SHARED_SIZE: i64 = 510;

/// A reader that would leave files behind: SQLite opens a WAL database's `-wal` and `-shm`
/// even for a read-only connection, creating them when they are missing, and only a writing
/// connection removes them again. When the database is in WAL mode and has no `-wal`, the
/// main file holds every transaction, and the reader can read it as immutable instead,
/// creating nothing, provided no checkpoint writes to it meanwhile: a read lock on SQLite's
/// SHARED range is taken (and held for the process's life) so that a writer that starts now
/// cannot take the EXCLUSIVE lock its last close needs to checkpoint and remove the WAL; its
/// transactions stay in its WAL, which this reader does not need. An empty `-wal` holds no
/// transaction either (a connection that has not written yet, or one that failed to start on
/// a full disk, leaving a `-shm` it could not size, which would make the usual open fail).
/// Returns the file holding that lock, or None (not WAL, a `-wal` with frames, or a writer
/// closing right now) for the usual open.
fn quiet_wal(path: &Path) -> Option<std::fs::File> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let wal = wal_path(path);
    let has_frames = |wal: &Path| std::fs::metadata(wal).is_ok_and(|m| m.len() > 0);
    if has_frames(&wal) {
        return None;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    // Bytes 18 and 19 of the header are 2 in WAL mode.
    let mut header = [0u8; 20];
    file.read_exact(&mut header).ok()?;
    if header[18] != 2 || header[19] != 2 {
        return None;
    }
    // SAFETY: flock is plain old data; every field that matters is set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_RDLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = SHARED_FIRST;
    lock.l_len = SHARED_SIZE;
    // SAFETY: the descriptor is open for the call; `lock` is a valid flock.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } != 0 {
        return None;
    }
    // A writer may have written between the look and the lock.
    if has_frames(&wal) {
        return None;
    }
    Some(file)
}

/// Why [`open_as`] failed: for good, or in a way that reading the file as immutable may avoid
/// (carrying the error to report if it does not).
enum Fallback {
    No(Error),
    Immutable(Error),
}

impl From<Error> for Fallback {
    fn from(e: Error) -> Fallback {
        Fallback::No(e)
    }
}

/// Turns off SQLite's memory statistics, before its first connection: they take a global
/// mutex on every allocation, for numbers elf-db never reads.
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: called once, before SQLite is initialized (the first connection does that);
        // were it initialized already, the call would only return SQLITE_MISUSE.
        let _ = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
    });
}

fn open_as(o: &Options, mode: Mode, immutable: bool) -> Result<Connection, Fallback> {
    configure_sqlite();
    let base = match mode {
        Mode::Read => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        Mode::Write | Mode::Maintain => {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        }
        Mode::Create => {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        }
    };
    let opened = if immutable {
        Connection::open_with_flags(immutable_uri(&o.path), base | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(&o.path, base)
    };
    let conn = opened.map_err(|e| {
        // SQLite says only "unable to open database file": ask the file system why.
        let why = if o.path.exists() {
            std::fs::OpenOptions::new()
                .read(true)
                .write(mode != Mode::Read)
                .open(&o.path)
                .err()
        } else {
            let parent = o
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::metadata(parent).err()
        };
        match why {
            Some(io) => Error::io(format!("opening {}", show(&o.path)), &io),
            None => error(e).context(format!("opening {}", show(&o.path))),
        }
    })?;
    conn.busy_timeout(o.busy).map_err(error)?;
    conn.set_prepared_statement_cache_capacity(64);
    // SAFETY: the handle is valid for the connection's life; `authorize` only reads an atomic
    // and takes no user data.
    let rc = unsafe {
        ffi::sqlite3_set_authorizer(conn.handle(), Some(authorize), std::ptr::null_mut())
    };
    if rc != ffi::SQLITE_OK {
        return Err(Error::internal("cannot install the SQLite authorizer").into());
    }
    guard(Guard::Own);
    let setup = |conn: &Connection| -> rusqlite::Result<()> {
        match mode {
            // Reading the schema opens the WAL index: a file that cannot be read fails here.
            Mode::Read => {
                conn.pragma_update(None, "query_only", true)?;
                conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            }
            Mode::Maintain => Ok(()),
            Mode::Write | Mode::Create => {
                // journal_mode answers with the mode now in force; a database that cannot use
                // WAL (on a file system without shared memory) keeps its own mode.
                let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
                let sync = if o.sync == Sync::Full {
                    "FULL"
                } else {
                    "NORMAL"
                };
                conn.pragma_update(None, "synchronous", sync)?;
                conn.pragma_update(None, "foreign_keys", true)
            }
        }
    };
    match retry_busy(o.busy, || setup(&conn)) {
        Ok(()) => Ok(conn),
        // Not a database, or damaged: the first statement reports it, as it would have.
        Err(e)
            if mode == Mode::Read
                && matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
                ) =>
        {
            Ok(conn)
        }
        Err(e) => {
            let errno = system_errno(&conn, &o.path);
            let err = open_error(&o.path, e, errno);
            let wal_empty = std::fs::metadata(wal_path(&o.path)).map_or(true, |m| m.len() == 0);
            if mode == Mode::Read && !immutable && errno == libc::EROFS && wal_empty {
                Err(Fallback::Immutable(err))
            } else {
                Err(Fallback::No(err))
            }
        }
    }
}

/// The error for a connection whose setup failed: SQLite's message, and the system's reason
/// when SQLite's is only "disk I/O error" or "unable to open database file".
fn open_error(path: &Path, e: rusqlite::Error, errno: c_int) -> Error {
    let context = format!("opening {}", show(path));
    let system = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::DiskFull)
    );
    if system && errno != 0 {
        let os = std::io::Error::from_raw_os_error(errno);
        return Error::io(format!("{context}: {}", describe(&e)), &os);
    }
    error(e).context(context)
}

/// The system's reason for the last failure of `conn`: EROFS when the database's folder is on
/// a read-only file system; otherwise SQLite's last errno when it is one that explains a failed
/// open or write (SQLite's last errno is often that of a later, harmless probe).
fn system_errno(conn: &Connection, path: &Path) -> c_int {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
        // SAFETY: statvfs is plain old data, filled in by the call; `c` is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 && st.f_flag & libc::ST_RDONLY != 0 {
            return libc::EROFS;
        }
    }
    // SAFETY: the handle is valid while `conn` lives.
    let errno = unsafe { ffi::sqlite3_system_errno(conn.handle()) };
    match errno {
        libc::ENOSPC | libc::EDQUOT | libc::EACCES | libc::EPERM | libc::EROFS | libc::EIO => errno,
        _ => 0,
    }
}

/// `PATH-wal`.
fn wal_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// `file:PATH?immutable=1`, the path percent-encoded as SQLite's URI filenames require.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Runs `f`, trying again while it fails with SQLITE_BUSY and the busy timeout has not passed.
///
/// `busy_timeout` does the waiting in nearly every case; this covers the few where SQLite
/// answers busy without calling its busy handler (a WAL file being recovered by another
/// connection, a journal mode change).
pub fn retry_busy<T>(
    timeout: Duration,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let policy = Policy {
        base: Duration::from_millis(5),
        max_delay: Duration::from_millis(200),
        jitter: Jitter::Full,
    };
    let mut waiter = Waiter::new(policy, timeout);
    loop {
        match f() {
            Err(e) if is_busy(&e) && waiter.wait() => continue,
            other => return other,
        }
    }
}

/// `BEGIN IMMEDIATE`: takes the write lock, waiting up to the busy timeout.
pub fn begin(conn: &Connection, timeout: Duration) -> elf_core::Result<()> {
    guard(Guard::Own);
    retry_busy(timeout, || conn.execute_batch("BEGIN IMMEDIATE")).map_err(error)
}

/// `COMMIT`; on failure the transaction is rolled back, so nothing is half-done.
pub fn commit(conn: &Connection) -> elf_core::Result<()> {
    guard(Guard::Own);
    match conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
    {
        Ok(_) => Ok(()),
        Err(e) => {
            rollback(conn);
            Err(error(e).context("committing"))
        }
    }
}

/// `ROLLBACK`, if a transaction is open.
pub fn rollback(conn: &Connection) {
    guard(Guard::Own);
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// Runs one of elf-db's own statements (no parameters, no rows), cached.
pub fn run_cached(conn: &Connection, sql: &str) -> elf_core::Result<()> {
    guard(Guard::Own);
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(error)
}

/// True for SQLITE_BUSY and SQLITE_LOCKED.
pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The exit status and message for an SQLite error.
///
/// - busy or locked: 75 (safe to retry);
/// - a constraint (CHECK, UNIQUE, NOT NULL, FOREIGN KEY, a trigger's RAISE), a type mismatch,
///   a value too big, SQL that does not prepare (syntax, no such table or column), a
///   parameter problem: 65, the record is wrong;
/// - disk full, an I/O error, a file that is not a database or is corrupt: 74;
/// - read-only database or file, permission denied: 77;
/// - a file that cannot be opened: 66 when missing, 77 when not accessible, 74 otherwise;
/// - anything else: 70.
pub fn error(e: rusqlite::Error) -> Error {
    use rusqlite::Error as E;
    let message = describe(&e);
    match &e {
        E::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Error::temporary(format!(
                "the database is busy: {message} (gave up after --busy-timeout)"
            )),
            ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig => {
                Error::data(message)
            }
            ErrorCode::Unknown | ErrorCode::ParameterOutOfRange => Error::data(message),
            ErrorCode::AuthorizationForStatementDenied => Error::data(format!(
                "{message}: transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE), \
                 ATTACH and DETACH are refused here, and PRAGMA in records"
            )),
            ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::NotADatabase
            | ErrorCode::DatabaseCorrupt => Error::io_failure(message),
            ErrorCode::ReadOnly | ErrorCode::PermissionDenied => Error::permission(message),
            ErrorCode::CannotOpen => Error::io_failure(message),
            _ => Error::internal(message),
        },
        E::SqlInputError { .. }
        | E::MultipleStatement
        | E::InvalidParameterName(_)
        | E::InvalidParameterCount(..)
        | E::NulError(_)
        | E::ExecuteReturnedResults => Error::data(message),
        _ => Error::internal(message),
    }
}

/// SQLite's message without rusqlite's decorations.
fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::Error as E;
    match e {
        E::SqliteFailure(_, Some(msg)) => msg.clone(),
        E::SqliteFailure(f, None) => f.to_string(),
        E::SqlInputError { msg, offset, .. } => {
            format!("{msg} (at byte {})", offset.saturating_add(1))
        }
        E::MultipleStatement => "more than one statement in sql".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_uris_escape_what_a_uri_would_read() {
        assert_eq!(
            immutable_uri(Path::new("/h/memory/index.db")),
            "file:/h/memory/index.db?immutable=1"
        );
        assert_eq!(
            immutable_uri(Path::new("a b/x?y#z%.db")),
            "file:a%20b/x%3Fy%23z%25.db?immutable=1"
        );
    }
}
