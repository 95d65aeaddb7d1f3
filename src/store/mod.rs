//! The storage seam: one handle over SQLite or PostgreSQL, chosen by the database URL's scheme.
//!
//! Every query in opsdeck is written once, as dialect-neutral SQL text with `$1`-style
//! placeholders (SQLite accepts them as numbered parameters), and runs through [`Store`] or
//! [`Tx`]. Values are bound through [`Value`], whose variants are the column types both backends
//! share: 64-bit integers, reals, text, booleans and bytes. Timestamps are UTC milliseconds since
//! the Unix epoch (`*_at` columns, `BIGINT`), money is integer minor units plus a currency column.
//!
//! Nothing outside this module opens a connection or knows which backend is in use, except
//! through [`Store::backend`] for the few places (backup, schema inspection) where the answer
//! genuinely differs.

mod backup;
mod direct;
pub mod fence;
pub mod files;
pub mod lease;
mod migrate;
pub mod turn;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{FromRow, Postgres, Sqlite};

pub use backup::backup_sqlite;
pub use direct::{DirectSqlite, checkpoint as direct_checkpoint};
pub use migrate::{MIGRATION_COUNT, SchemaColumn};

/// Errors from the storage layer; "not found" and unique violations are typed once here so that
/// callers never inspect driver errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record not found")]
    NotFound,
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("invalid database URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Backup(String),
    #[error("database error: {0}")]
    Direct(#[source] rusqlite::Error),
    #[error("the database thread failed: {0}")]
    Thread(String),
    #[error("not supported on this backend: {0}")]
    Unsupported(&'static str),
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(ref db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_string())
            }
            other => StoreError::Database(other),
        }
    }
}

impl StoreError {
    /// Whether PostgreSQL aborted the transaction only because of how it interleaved with
    /// another (deadlock or serialization failure), so running it again can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        }
    }

    /// Whether the store refused for now because another writer held it past the busy timeout
    /// (SQLite's "database is locked"; PostgreSQL's lock timeout), so the same request can
    /// succeed a moment later.
    pub fn is_busy(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => matches!(
                db.code().as_deref(),
                // SQLITE_BUSY, SQLITE_LOCKED and their extended codes; lock_not_available.
                Some("5" | "6" | "261" | "262" | "517" | "773" | "55P03")
            ),
            StoreError::Direct(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A bound parameter. Nulls carry their type because PostgreSQL checks parameter types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

macro_rules! value_from {
    ($variant:ident: $($t:ty => $conv:expr),+ $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::$variant(Some(($conv)(v))) }
        }
        impl From<Option<$t>> for Value {
            fn from(v: Option<$t>) -> Self { Value::$variant(v.map($conv)) }
        }
    )+};
}
value_from!(Int: i64 => |v| v, i32 => i64::from, u32 => i64::from);
value_from!(Real: f64 => |v| v);
value_from!(Text: String => |v| v, &str => str::to_owned, &String => String::clone);
value_from!(Bool: bool => |v| v);
value_from!(Bytes: Vec<u8> => |v| v, &[u8] => <[u8]>::to_vec);

/// Builds a `Vec<Value>` from heterogeneous arguments: `args![id, "name", Some(3_i64)]`.
#[macro_export]
macro_rules! args {
    () => { ::std::vec::Vec::<$crate::store::Value>::new() };
    ($($v:expr),+ $(,)?) => { ::std::vec![$($crate::store::Value::from($v)),+] };
}

/// Implements `sqlx::FromRow` for both backends' rows, each field decoded from the column of
/// its own name: `from_row!(Receipt { id, kind: "type", created, note: default })`.
///
/// A field may say where its value comes from: `"column"` (another column name), `default`
/// (`Default::default()` when the query has no such column), `skip` (always the default; the
/// caller fills it in) or `flatten` (another row type decoded from the same row).
///
/// This stands in for sqlx's `FromRow` derive, whose proc-macro crate compiles sqlx's drivers,
/// the bundled SQLite and the TLS stack a second time for the build host; that second copy
/// cost more build time than any other dependency.
#[macro_export]
macro_rules! from_row {
    ($ty:ident { $($field:ident $(: $how:tt)?),* $(,)? }) => {
        $crate::from_row!(@impl $ty, ::sqlx::sqlite::SqliteRow, { $($field $(: $how)?),* });
        $crate::from_row!(@impl $ty, ::sqlx::postgres::PgRow, { $($field $(: $how)?),* });
    };
    (@impl $ty:ident, $row:ty, { $($field:ident $(: $how:tt)?),* }) => {
        impl<'r> ::sqlx::FromRow<'r, $row> for $ty {
            fn from_row(row: &'r $row) -> ::std::result::Result<Self, ::sqlx::Error> {
                #[allow(unused_imports)]
                use ::sqlx::Row as _;
                ::std::result::Result::Ok($ty {
                    $($field: $crate::from_row!(@field row, $field $(: $how)?),)*
                })
            }
        }
    };
    (@field $row:ident, $field:ident) => {
        $row.try_get(::std::stringify!($field))?
    };
    (@field $row:ident, $field:ident: default) => {
        match $row.try_get(::std::stringify!($field)) {
            ::std::result::Result::Ok(v) => v,
            ::std::result::Result::Err(::sqlx::Error::ColumnNotFound(_)) => {
                ::std::default::Default::default()
            }
            ::std::result::Result::Err(e) => return ::std::result::Result::Err(e),
        }
    };
    (@field $row:ident, $field:ident: skip) => {
        ::std::default::Default::default()
    };
    (@field $row:ident, $field:ident: flatten) => {
        ::sqlx::FromRow::from_row($row)?
    };
    (@field $row:ident, $field:ident: $column:literal) => {
        $row.try_get($column)?
    };
}

/// A row type that decodes from both backends; [`from_row!`](crate::from_row) provides it for
/// structs whose fields are `i64`, `f64`, `bool`, `String`, `Vec<u8>` or options of those.
pub trait Row: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}
impl<T> Row for T where T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{}

/// Binds our values onto a concrete sqlx query; expanded once per backend so the same call site
/// serves both without a runtime `Any` layer.
macro_rules! bind_values {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for v in $args {
            q = match v {
                Value::Int(v) => q.bind(v),
                Value::Real(v) => q.bind(v),
                Value::Text(v) => q.bind(v),
                Value::Bool(v) => q.bind(v),
                Value::Bytes(v) => q.bind(v),
            };
        }
        q
    }};
}

/// The query methods, written once and expanded for [`Store`] (pool) and [`Tx`] (transaction);
/// `$inner` is the enum of borrowed executors each one hands out.
macro_rules! query_methods {
    ($recv:ty, $inner:ident) => {
        /// Runs a statement and returns the number of rows it affected.
        pub async fn execute(self: $recv, sql: &'static str, args: Vec<Value>) -> Result<u64> {
            let _pending = self.announce_write(sql);
            Ok(match self.inner() {
                $inner::Sqlite(e) => bind_values!(sqlx::query::<Sqlite>(sql), args)
                    .execute(e)
                    .await?
                    .rows_affected(),
                $inner::Postgres(e) => bind_values!(sqlx::query::<Postgres>(sql), args)
                    .execute(e)
                    .await?
                    .rows_affected(),
            })
        }

        /// Runs a statement whose text is assembled at run time from fixed fragments, such as a
        /// multi-row `VALUES` list with one placeholder group per row. Values always travel as
        /// `args`, never inside `sql`. Returns the number of rows affected.
        pub async fn execute_assembled(self: $recv, sql: String, args: Vec<Value>) -> Result<u64> {
            let _pending = self.announce_write(&sql);
            Ok(match self.inner() {
                $inner::Sqlite(e) => {
                    let sql = sqlite_positional(sql);
                    bind_values!(sqlx::query::<Sqlite>(sqlx::AssertSqlSafe(sql)), args)
                        .execute(e)
                        .await?
                        .rows_affected()
                }
                $inner::Postgres(e) => {
                    bind_values!(sqlx::query::<Postgres>(sqlx::AssertSqlSafe(sql)), args)
                        .execute(e)
                        .await?
                        .rows_affected()
                }
            })
        }

        /// [`Self::execute_assembled`] for statements that return rows (`… RETURNING …`).
        pub async fn fetch_all_assembled<T: Row>(
            self: $recv,
            sql: String,
            args: Vec<Value>,
        ) -> Result<Vec<T>> {
            let _pending = self.announce_write(&sql);
            Ok(match self.inner() {
                $inner::Sqlite(e) => {
                    let sql = sqlite_positional(sql);
                    bind_values!(sqlx::query_as::<Sqlite, T>(sqlx::AssertSqlSafe(sql)), args)
                        .fetch_all(e)
                        .await?
                }
                $inner::Postgres(e) => {
                    bind_values!(
                        sqlx::query_as::<Postgres, T>(sqlx::AssertSqlSafe(sql)),
                        args
                    )
                    .fetch_all(e)
                    .await?
                }
            })
        }

        /// Runs a query and decodes every row.
        pub async fn fetch_all<T: Row>(
            self: $recv,
            sql: &'static str,
            args: Vec<Value>,
        ) -> Result<Vec<T>> {
            let _pending = self.announce_write(sql);
            Ok(match self.inner() {
                $inner::Sqlite(e) => {
                    bind_values!(sqlx::query_as::<Sqlite, T>(sql), args)
                        .fetch_all(e)
                        .await?
                }
                $inner::Postgres(e) => {
                    bind_values!(sqlx::query_as::<Postgres, T>(sql), args)
                        .fetch_all(e)
                        .await?
                }
            })
        }

        /// Runs a query expected to return at most one row.
        pub async fn fetch_optional<T: Row>(
            self: $recv,
            sql: &'static str,
            args: Vec<Value>,
        ) -> Result<Option<T>> {
            let _pending = self.announce_write(sql);
            Ok(match self.inner() {
                $inner::Sqlite(e) => {
                    bind_values!(sqlx::query_as::<Sqlite, T>(sql), args)
                        .fetch_optional(e)
                        .await?
                }
                $inner::Postgres(e) => {
                    bind_values!(sqlx::query_as::<Postgres, T>(sql), args)
                        .fetch_optional(e)
                        .await?
                }
            })
        }

        /// Runs a query that must return exactly one row ([`StoreError::NotFound`] otherwise).
        pub async fn fetch_one<T: Row>(
            self: $recv,
            sql: &'static str,
            args: Vec<Value>,
        ) -> Result<T> {
            self.fetch_optional(sql, args)
                .await?
                .ok_or(StoreError::NotFound)
        }
    };
}

enum Inner<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

enum TxInner<'a> {
    Sqlite(&'a mut sqlx::SqliteConnection),
    Postgres(&'a mut sqlx::PgConnection),
}

/// A cloneable handle on the database pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// SQLite's count of pending writes, for which bulk writers give way (see [`turn`]);
    /// `None` on PostgreSQL.
    turns: Option<std::sync::Arc<turn::Turns>>,
    /// Shared by every clone, so the writer and the readers meet on it.
    fence: std::sync::Arc<fence::Fence>,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Connection settings the caller decides; the rest (WAL, foreign keys, timeouts) is policy.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    pub busy_timeout: Duration,
    /// Create a missing SQLite file (true for `serve`; false for tools that must find an
    /// existing store, such as `backup`).
    pub create_if_missing: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            create_if_missing: true,
        }
    }
}

impl Store {
    /// Opens the database named by `url` (`sqlite://PATH` or `postgres://…`); a missing SQLite
    /// file is created when `opts.create_if_missing` is set and refused otherwise. Does not run
    /// migrations; see [`Store::migrate`].
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Self> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let co = PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl {
                url: redact_url(url),
                reason: e.to_string(),
            })?;
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(co)
                    .await?,
            )
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if !opts.create_if_missing && !Path::new(path).exists() {
                return Err(StoreError::BadUrl {
                    url: url.to_string(),
                    reason: "no SQLite store at this path (check --data-dir / --database-url)"
                        .into(),
                });
            }
            Pool::Sqlite(Self::sqlite_pool(Path::new(path), opts).await?)
        } else {
            return Err(StoreError::BadUrl {
                url: redact_url(url),
                reason: "expected a sqlite:// or postgres:// URL".into(),
            });
        };
        let turns = matches!(pool, Pool::Sqlite(_)).then(Default::default);
        Ok(Self {
            pool,
            turns,
            fence: Default::default(),
        })
    }

    async fn sqlite_pool(path: &Path, opts: &ConnectOptions) -> Result<SqlitePool> {
        // Created 0600 before SQLite opens it, so the WAL and shared-memory files SQLite
        // creates beside it are 0600 too; see `files`.
        if path.as_os_str() != ":memory:" {
            files::prepare_sqlite(path, opts.create_if_missing).map_err(|source| {
                StoreError::File {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        }
        // WAL lets readers (the dashboard, `opsdeck backup`) run beside the writer;
        // synchronous=FULL makes every acknowledged commit survive power loss, not only a crash.
        let co = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(opts.create_if_missing)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(opts.busy_timeout);
        Ok(SqlitePoolOptions::new()
            .max_connections(opts.max_connections)
            .connect_with(co)
            .await?)
    }

    /// Waits until every ingested event acknowledged so far is in the rollups and the month
    /// totals (see [`fence`]). Call before reading `usage_rollups` or `usage_months`.
    pub async fn settle(&self) {
        self.fence.settle().await;
    }

    /// Lets the other writes this process has waiting for SQLite's one write lock go first (at
    /// most [`turn::GIVE_WAY_AT_MOST`]); returns at once on PostgreSQL. For a job that writes
    /// many transactions back to back: SQLite's busy handler sleeps and retries rather than
    /// queueing, so a waiting lease renewal nearly never saw the lock free between them.
    pub async fn give_way(&self) {
        if let Some(turns) = &self.turns {
            turns.give_way().await;
        }
    }

    /// The writer's side of [`Store::settle`].
    pub fn fence(&self) -> &fence::Fence {
        &self.fence
    }

    /// A direct connection to the same SQLite file for the ingest writer (see
    /// [`DirectSqlite`]); `None` on PostgreSQL, whose pool has no such per-statement cost.
    pub fn direct_sqlite(&self) -> Option<DirectSqlite> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let co = p.connect_options();
                // The ingest writer waits longer than other connections for the write lock:
                // a job's transaction through sqlx (one channel hop per statement) can hold it
                // for seconds when both cores are busy, and failing the batch would fail every
                // request in it. Still well inside the 30 s request timeout, so that a store
                // locked longer answers 503 "busy" with Retry-After rather than a timeout.
                Some(DirectSqlite::new(
                    co.get_filename().to_path_buf(),
                    Duration::from_secs(10),
                    self.turns.clone().unwrap_or_default(),
                ))
            }
            Pool::Postgres(_) => None,
        }
    }

    /// Folds a kept-count table (a `n` column summed per `keys`, kept by triggers: migrations
    /// 0034 and 0036) to one row per key on PostgreSQL, dropping keys whose sum is zero. There
    /// the triggers append a +1 / -1 row per change, so concurrent writers never wait on a
    /// shared counter row, and readers sum a key's rows. One statement: a row appended while it
    /// runs is not in its snapshot, so it stays for the next fold. Nothing to do on SQLite,
    /// where the triggers update one row per key in place.
    pub async fn fold_counts(&self, table: &'static str, keys: &'static str) -> Result<()> {
        if self.backend() == Backend::Postgres {
            self.execute_assembled(
                format!(
                    "WITH gone AS (DELETE FROM {table} RETURNING {keys}, n) \
                     INSERT INTO {table} ({keys}, n) \
                     SELECT {keys}, CAST(SUM(n) AS BIGINT) FROM gone \
                     GROUP BY {keys} HAVING SUM(n) <> 0"
                ),
                crate::args![],
            )
            .await?;
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Counts a statement that writes as pending, so the bulk writers give way (see [`turn`]).
    fn announce_write(&self, sql: &str) -> Option<turn::Pending> {
        match &self.turns {
            Some(t) if turn::writes(sql) => Some(t.announce()),
            _ => None,
        }
    }

    fn inner(&self) -> Inner<'_> {
        match &self.pool {
            Pool::Sqlite(p) => Inner::Sqlite(p),
            Pool::Postgres(p) => Inner::Postgres(p),
        }
    }

    /// Starts a transaction; dropped without [`Tx::commit`] it rolls back.
    ///
    /// On SQLite the transaction takes the write lock up front (`BEGIN IMMEDIATE`): a deferred
    /// transaction that reads before it writes cannot upgrade while another connection writes,
    /// and fails at once with "database is locked" instead of waiting out the busy timeout.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => {
                // Pending from before it asks for the lock until it ends.
                let pending = self.announce_write("INSERT");
                Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?, pending)
            }
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// Cheap liveness probe used by `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        // Cast: PostgreSQL types a bare literal as INT4, which does not decode into i64.
        let _: (i64,) = self.fetch_one("SELECT CAST(1 AS BIGINT)", args![]).await?;
        Ok(())
    }

    /// Pool occupancy for the metrics endpoint: (open connections, idle connections).
    pub fn pool_stats(&self) -> (u32, u32) {
        match &self.pool {
            Pool::Sqlite(p) => (p.size(), p.num_idle() as u32),
            Pool::Postgres(p) => (p.size(), p.num_idle() as u32),
        }
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    query_methods!(&Self, Inner);
}

/// An open transaction on either backend.
pub enum Tx {
    /// With its count among the pending writes (see [`turn`]), until it ends.
    Sqlite(sqlx::Transaction<'static, Sqlite>, Option<turn::Pending>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    fn inner(&mut self) -> TxInner<'_> {
        match self {
            Tx::Sqlite(t, _) => TxInner::Sqlite(t),
            Tx::Postgres(t) => TxInner::Postgres(t),
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t, _pending) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    /// A transaction is counted as pending for its whole life already.
    fn announce_write(&self, _sql: &str) -> Option<turn::Pending> {
        None
    }

    query_methods!(&mut Self, TxInner);
}

/// `INSERT INTO <table_and_columns> VALUES ($1, …), (…), … <suffix>` for `rows` rows of `width`
/// placeholders: the text for [`Store::execute_assembled`]. Identical shapes give identical text,
/// so the driver's statement cache reuses the prepared statement.
pub fn multi_row_insert(
    table_and_columns: &str,
    width: usize,
    rows: usize,
    suffix: &str,
) -> String {
    let mut sql =
        String::with_capacity(table_and_columns.len() + suffix.len() + rows * width * 6 + 16);
    sql.push_str("INSERT INTO ");
    sql.push_str(table_and_columns);
    sql.push_str(" VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * width + c + 1).to_string());
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(suffix);
    sql
}

/// A statement assembled from the filters a request gives: only those appear in the SQL, so
/// each reaches its index (an `($1 = '' OR col = $1)` form makes the planner walk everything).
/// Each clause's `?` becomes the next numbered placeholder, bound to its value.
pub struct Assembled {
    pub sql: String,
    pub args: Vec<Value>,
}

impl Assembled {
    pub fn new(head: impl Into<String>) -> Self {
        Self {
            sql: head.into(),
            args: Vec::new(),
        }
    }

    /// Appends `clause` with every `?` in it standing for `value` (so one value may be used
    /// twice in a clause).
    pub fn bind(&mut self, clause: &str, value: Value) {
        self.args.push(value);
        let n = format!("${}", self.args.len());
        self.sql.push_str(&clause.replace('?', &n));
    }
}

/// `$first, $first+1, …`: `n` numbered placeholders, comma-separated, for an `IN (…)` list of an
/// assembled statement.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Most bytes of bound values to send in one PostgreSQL statement. Bounded so one statement's
/// arrays stay a modest allocation on both ends; past a few hundred KiB a bigger statement
/// gains nothing. (sqlx 0.9.0 left Nagle's algorithm on, transact-rs/sqlx#4335, and a message
/// bigger than the socket's first send buffer waited ~40 ms for a delayed ACK, so this was
/// 12 KiB; 0.9.1 sets TCP_NODELAY. Ingest at 0 stored, 2026-12-07, same machine and hour:
/// 42.0k events/s on 0.9.0 with 12 KiB, 52.5k on 0.9.1 with 12 KiB, 64.9k with 256 KiB, 64.8k
/// with 1 MiB.)
pub const PG_STATEMENT_BYTES: usize = 256 * 1024;

/// Splits `items` into consecutive runs whose `size`s add up to at most `budget`; an item
/// bigger than the budget gets a run of its own.
pub fn chunks_by_size<'a, T>(
    items: &'a [T],
    budget: usize,
    size: impl Fn(&T) -> usize + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut used = 0;
        let mut n = 0;
        for item in rest {
            let s = size(item);
            if n > 0 && used + s > budget {
                break;
            }
            used += s;
            n += 1;
        }
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// Rewrites `$1, $2, … $n` — each once and in order, as [`multi_row_insert`] writes them — to
/// anonymous `?` for SQLite, and leaves any other SQL as written. SQLite finds a named
/// parameter by a linear search of the statement's parameter list, so binding n named
/// parameters costs O(n²): most of the time of a wide multi-row insert.
fn sqlite_positional(sql: String) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let (mut expected, mut last, mut i, mut in_quote) = (1u64, 0, 0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => in_quote = !in_quote,
            b'$' if !in_quote => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let n: Option<u64> = sql[i + 1..i + 1 + digits].parse().ok();
                if n != Some(expected) {
                    return sql;
                }
                expected += 1;
                out.push_str(&sql[last..i]);
                out.push('?');
                i += 1 + digits;
                last = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&sql[last..]);
    out
}

/// Current time as UTC milliseconds since the Unix epoch, the unit of every `*_at` column.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The URL with any password replaced, safe for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_lists_start_where_asked() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn multi_row_inserts_number_their_placeholders() {
        assert_eq!(
            multi_row_insert("t (a, b)", 2, 2, "ON CONFLICT DO NOTHING"),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn size_chunks_fill_up_to_the_budget() {
        let sizes = [3, 4, 2, 10, 1, 1];
        let runs: Vec<&[usize]> = chunks_by_size(&sizes, 7, |s| *s).collect();
        assert_eq!(runs, [&[3, 4][..], &[2], &[10], &[1, 1]]);
        assert_eq!(chunks_by_size(&[] as &[usize], 7, |s| *s).count(), 0);
    }

    #[test]
    fn only_ordered_placeholders_become_positional() {
        let p = |s: &str| sqlite_positional(s.to_string());
        assert_eq!(
            p("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            p(&multi_row_insert("t (a)", 1, 12, ""))
                .matches('?')
                .count(),
            12
        );
        // Repeated, out of order or absent numbers keep their names.
        for kept in [
            "SELECT $1 WHERE x = $1",
            "SELECT $2, $1",
            "SELECT $",
            "SELECT a FROM t WHERE b = $10",
        ] {
            assert_eq!(p(kept), kept);
        }
        // A dollar sign inside a string literal is text, not a parameter.
        assert_eq!(p("SELECT '$5', $1"), "SELECT '$5', ?");
        assert_eq!(p("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
