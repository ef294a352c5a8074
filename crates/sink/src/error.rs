//! Why writing or reading tables failed. Every message names the path (or table) and says what to
//! do about it.

use std::path::PathBuf;

/// An error of the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A table does not match its contract in `schemas/<table>.toml` (a bug in the producer).
    #[error("table {table} does not match its contract schemas/{table}.toml: {detail}; the table was not written (this is a bug in logcensus, please report it)")]
    Contract { table: String, detail: String },

    /// An extra metadata key would shadow one the sink writes itself.
    #[error("metadata key `{key}` is reserved: logcensus writes it itself; use another name for the extra metadata")]
    ReservedKey { key: String },

    /// A directory could not be created.
    #[error("cannot create directory {}: {source}; check --out (it must be a writable directory)", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A file could not be created, written or synced.
    #[error("cannot write {}: {source}; check free space and permissions under --out", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A directory could not be synced, so what was made or renamed in it may not survive a
    /// crash.
    #[error("cannot sync directory {}: {source}; the files written may not survive a crash: check the file system under --out and run again", path.display())]
    SyncDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The Parquet encoder failed.
    #[error("cannot encode the Parquet file {}: {source}; check free space under --out", path.display())]
    Encode {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },

    /// The finished temporary file could not be moved into place.
    #[error("cannot rename {} to {}: {source}; check permissions under --out", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },

    /// A part file left by an earlier run could not be removed.
    #[error("cannot remove the stale file {}: {source}; delete it by hand, or readers will count its rows as well", path.display())]
    RemoveStale {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A file or directory could not be read.
    #[error("cannot read {}: {source}; check the path", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A file is not a Parquet file logcensus can read.
    #[error("{} is not a readable Parquet file: {detail}; pass a part-*.parquet file written by logcensus", path.display())]
    NotParquet { path: PathBuf, detail: String },

    /// [`crate::read_table`] was asked for a table logcensus does not write.
    #[error("unknown table `{table}`: logcensus writes {known}")]
    UnknownTable { table: String, known: String },
}
