//! Where log lines come from: files (plain, gzip, zstd), globs and stdin, cut into batches of lines.
//!
//! Lines are bytes. A batch is one buffer plus the ranges of its lines, so a worker can parse
//! them without copying. A line longer than the limit is skipped while reading (never buffered
//! whole) and recorded as [`Entry::TooLong`]; a read error mid-file (a truncated gzip stream, a
//! disk error) keeps every complete line before it and records [`Entry::Truncated`].
//!
//! ```no_run
//! use logcensus_source::{expand_inputs, open_input, LineReader};
//! let inputs = expand_inputs(&["logs/*.log.gz".to_string()]).unwrap();
//! for input in &inputs {
//!     let mut reader = LineReader::new(open_input(input).unwrap(), 64 * 1024);
//!     while let Some(batch) = reader.next_batch().unwrap() {
//!         println!("{} entries", batch.entries.len());
//!     }
//! }
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod marks;
mod pieces;
pub use pieces::{PieceFile, PIECE_BYTES};

/// Default line limit: 64 KiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Roughly how many bytes of lines a batch carries.
const BATCH_TARGET_BYTES: usize = 256 * 1024;

/// One input named on the command line or in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Standard input (`-`).
    Stdin,
    /// A file; compression is detected from its first bytes.
    File(PathBuf),
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Stdin => f.write_str("<stdin>"),
            Input::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why inputs could not be found or opened. Messages name the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "input {path} does not exist; check the path given with --input or in [source] inputs"
    )]
    NotFound { path: PathBuf },
    #[error("the pattern `{pattern}` matches no file; check the path given with --input or in [source] inputs")]
    NoMatch { pattern: String },
    #[error("the pattern `{pattern}` is not a valid glob: {detail}")]
    BadPattern { pattern: String, detail: String },
    #[error("cannot open input {path}: {source}; check that the file exists and is readable")]
    Open { path: PathBuf, source: io::Error },
    #[error("input {path} is a directory; pass the files in it, e.g. '{path}/*.log'")]
    IsDirectory { path: PathBuf },
}

/// Expands input patterns: `-` is stdin, a pattern with `*`, `?` or `[` is a glob (sorted
/// matches; matching nothing is an error), anything else is a file that must exist.
pub fn expand_inputs(patterns: &[String]) -> Result<Vec<Input>, SourceError> {
    let mut out = Vec::new();
    for pattern in patterns {
        if pattern == "-" {
            out.push(Input::Stdin);
            continue;
        }
        if pattern.contains(['*', '?', '[']) {
            let paths = glob::glob(pattern).map_err(|e| SourceError::BadPattern {
                pattern: pattern.clone(),
                detail: e.msg.to_string(),
            })?;
            let mut matched: Vec<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|p| !p.is_dir())
                .collect();
            if matched.is_empty() {
                return Err(SourceError::NoMatch {
                    pattern: pattern.clone(),
                });
            }
            matched.sort();
            out.extend(matched.into_iter().map(Input::File));
            continue;
        }
        let path = PathBuf::from(pattern);
        if path.is_dir() {
            return Err(SourceError::IsDirectory { path });
        }
        if !path.exists() {
            return Err(SourceError::NotFound { path });
        }
        out.push(Input::File(path));
    }
    Ok(out)
}

/// Counts bytes read from the underlying (possibly compressed) stream, for progress bars.
#[derive(Debug, Clone, Default)]
pub struct ByteCounter(Arc<AtomicU64>);

impl ByteCounter {
    /// Bytes read so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Counting<R> {
    inner: R,
    counter: ByteCounter,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens an input, detecting gzip and zstd from the magic bytes (not the file name).
pub fn open_input(input: &Input) -> Result<Box<dyn Read + Send>, SourceError> {
    open_counted(input, &ByteCounter::default())
}

/// Like [`open_input`], adding the raw bytes read to `counter`.
pub fn open_counted(
    input: &Input,
    counter: &ByteCounter,
) -> Result<Box<dyn Read + Send>, SourceError> {
    let raw: Box<dyn Read + Send> = match input {
        Input::Stdin => Box::new(io::stdin()),
        Input::File(path) => Box::new(File::open(path).map_err(|source| SourceError::Open {
            path: path.clone(),
            source,
        })?),
    };
    let counted = Counting {
        inner: raw,
        counter: counter.clone(),
    };
    let mut buffered = BufReader::with_capacity(128 * 1024, counted);
    let magic = match buffered.fill_buf() {
        Ok(b) => b.get(..4).map(|m| [m[0], m[1], m[2], m[3]]),
        Err(source) => {
            return Err(SourceError::Open {
                path: input_path(input),
                source,
            })
        }
    };
    Ok(match magic {
        Some([0x1f, 0x8b, _, _]) => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Some([0x28, 0xb5, 0x2f, 0xfd]) => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(|source| {
                SourceError::Open {
                    path: input_path(input),
                    source,
                }
            })?,
        ),
        _ => Box::new(buffered),
    })
}

fn input_path(input: &Input) -> PathBuf {
    match input {
        Input::Stdin => PathBuf::from("-"),
        Input::File(p) => p.clone(),
    }
}

/// One entry of a batch, in input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A complete line: `data[start..end]`, without its `\n`.
    Line { start: u32, end: u32 },
    /// A line over the limit, skipped while reading.
    TooLong,
    /// The input ended with an error (e.g. a truncated gzip stream); what followed the last
    /// complete line is lost and counted here once.
    Truncated,
}

/// A batch of lines from one input.
#[derive(Debug, Default)]
pub struct Batch {
    /// The bytes the entries point into. A reused batch may hold stale bytes after its last
    /// entry's: only the entries say where lines are.
    pub data: Vec<u8>,
    /// Lines and rejections, in input order.
    pub entries: Vec<Entry>,
    /// 1-based line number of the first entry in its input.
    pub first_line: u64,
    /// Where `data`'s newlines and quotes are, when its reader marked them ([`PieceFile`]
    /// does); empty otherwise.
    marks: marks::Marks,
    /// Scratch for [`PieceFile`]: the newlines of the piece being cut into lines.
    newlines: Vec<u32>,
}

impl Batch {
    /// The bytes of a [`Entry::Line`].
    pub fn line(&self, start: u32, end: u32) -> &[u8] {
        &self.data[start as usize..end as usize]
    }

    /// Where the double quotes of the batch's lines are, when its reader marked them: bit
    /// `i % 64` of word `i / 64` is set exactly when `data[i]` is `"`, for every byte of every
    /// [`Entry::Line`]. `None` when the reader did not mark them.
    pub fn quotes(&self) -> Option<&[u64]> {
        self.marks.marked().then_some(&self.marks.quotes[..])
    }
}

/// The read error that ended an input early, with the line it happened after.
#[derive(Debug)]
pub struct ReadFailure {
    /// Number of entries read from the input before the error.
    pub after_line: u64,
    pub error: io::Error,
}

/// Cuts a byte stream into [`Batch`]es of lines, never holding more than one batch plus one
/// line-limit of bytes.
pub struct LineReader<R> {
    reader: R,
    max_line: usize,
    /// An incomplete line carried over to the next batch (at most `max_line` bytes).
    carry: Vec<u8>,
    /// True while skipping the rest of an over-long line.
    skipping: bool,
    next_line: u64,
    done: bool,
    failure: Option<ReadFailure>,
}

impl<R: Read> LineReader<R> {
    /// A reader that rejects lines longer than `max_line` bytes.
    pub fn new(reader: R, max_line: usize) -> Self {
        LineReader {
            reader,
            max_line: max_line.max(1),
            carry: Vec::new(),
            skipping: false,
            next_line: 1,
            done: false,
            failure: None,
        }
    }

    /// The read error that ended the input, if any (taken once).
    pub fn take_failure(&mut self) -> Option<ReadFailure> {
        self.failure.take()
    }

    /// The next batch, or `None` at the end of the input. A read error does not fail this call:
    /// it ends the input with an [`Entry::Truncated`] and is kept for [`Self::take_failure`].
    pub fn next_batch(&mut self) -> io::Result<Option<Batch>> {
        self.next_batch_in(Batch::default())
    }

    /// Like [`Self::next_batch`], reusing the allocations of a batch that has been processed
    /// (its contents are discarded). A reader fed back its spent batches allocates nothing per
    /// batch, and writes into memory that is already mapped and in cache.
    pub fn next_batch_in(&mut self, spent: Batch) -> io::Result<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        let mut batch = spent;
        batch.entries.clear();
        batch.marks.clear();
        batch.first_line = self.next_line;
        // The buffer keeps the length it grew to: a spent batch's bytes are overwritten, not
        // zeroed again first (only growth is zeroed). `len` is how much of it this batch fills.
        let mut len = self.carry.len();
        if batch.data.len() < len {
            batch.data.resize(len, 0);
        }
        batch.data[..len].copy_from_slice(&self.carry);
        self.carry.clear();
        let mut eof = false;
        let mut error = None;
        // Fill to the target size (or the end of the input); always read at least once, so a
        // carried-over line longer than the target still makes progress.
        let mut first = true;
        while first || len < BATCH_TARGET_BYTES {
            first = false;
            let want = (BATCH_TARGET_BYTES + 64 * 1024)
                .saturating_sub(len)
                .max(64 * 1024);
            if batch.data.len() < len + want {
                batch.data.resize(len + want, 0);
            }
            match self.reader.read(&mut batch.data[len..len + want]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    eof = true;
                    break;
                }
            }
        }
        self.split(&mut batch, len, eof, error.is_some());
        if let Some(error) = error {
            self.failure = Some(ReadFailure {
                after_line: self.next_line - 2,
                error,
            });
        }
        if eof {
            self.done = true;
        }
        if batch.entries.is_empty() && self.done {
            return Ok(None);
        }
        Ok(Some(batch))
    }

    /// Records the lines of `batch.data[..data_len]`, moving an incomplete tail into `carry`.
    fn split(&mut self, batch: &mut Batch, data_len: usize, eof: bool, failed: bool) {
        let mut pos = 0usize;
        while let Some(nl) = memchr::memchr(b'\n', &batch.data[pos..data_len]) {
            let end = pos + nl;
            if self.skipping {
                self.skipping = false;
                self.push(batch, Entry::TooLong);
            } else if end - pos > self.max_line {
                self.push(batch, Entry::TooLong);
            } else {
                let line_end = if end > pos && batch.data[end - 1] == b'\r' {
                    end - 1
                } else {
                    end
                };
                self.push(
                    batch,
                    Entry::Line {
                        start: pos as u32,
                        end: line_end as u32,
                    },
                );
            }
            pos = end + 1;
        }
        let tail = data_len - pos;
        if failed {
            // Whatever followed the last newline is a damaged line.
            if tail > 0 || self.skipping {
                self.skipping = false;
            }
            self.push(batch, Entry::Truncated);
        } else if eof {
            if self.skipping || tail > self.max_line {
                self.skipping = false;
                self.push(batch, Entry::TooLong);
            } else if tail > 0 {
                let end = if batch.data[data_len - 1] == b'\r' {
                    data_len - 1
                } else {
                    data_len
                };
                self.push(
                    batch,
                    Entry::Line {
                        start: pos as u32,
                        end: end as u32,
                    },
                );
            }
        } else if self.skipping || tail > self.max_line {
            self.skipping = true;
        } else {
            self.carry.extend_from_slice(&batch.data[pos..data_len]);
        }
    }

    fn push(&mut self, batch: &mut Batch, entry: Entry) {
        batch.entries.push(entry);
        self.next_line += 1;
    }
}

/// Every entry of a reader, with its bytes (for tests).
#[cfg(test)]
fn read_all_entries<R: Read>(reader: R, max_line: usize) -> Vec<(Entry, Vec<u8>)> {
    let mut lr = LineReader::new(reader, max_line);
    let mut out = Vec::new();
    while let Ok(Some(batch)) = lr.next_batch() {
        out.extend(entries_with_bytes(&batch));
    }
    out
}

/// A batch's entries, each with its line's bytes (none for a rejection), for tests.
#[cfg(test)]
fn entries_with_bytes(batch: &Batch) -> impl Iterator<Item = (Entry, Vec<u8>)> + '_ {
    batch.entries.iter().map(|e| {
        let bytes = match *e {
            Entry::Line { start, end } => batch.line(start, end).to_vec(),
            _ => Vec::new(),
        };
        (*e, bytes)
    })
}

/// Size of a file in bytes, for progress bars (0 for stdin or on error).
pub fn input_len(input: &Input) -> u64 {
    match input {
        Input::Stdin => 0,
        Input::File(p) => Path::new(p).metadata().map(|m| m.len()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests;
