//! Plain files shared out to the workers piece by piece (see [`logcensus_source::PieceFile`]).
//!
//! Every worker takes the next piece of the current file, reads it into its own buffer and
//! counts its lines, so a large file is read on every core and no thread only reads. Files are
//! opened in input order, one after the other (a glob of thousands of files never holds
//! thousands of descriptors). Line numbers depend on every piece before a line, so each worker
//! notes how many entries each of its pieces had, and what it has to say about a line (a
//! rejection to describe, a read error) waits for the end of the run, when the numbers are
//! known ([`Numbering`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use logcensus_source::{PieceFile, SourceError};

/// The plain inputs, and which piece of which is next.
pub(crate) struct PieceQueue<'a> {
    /// Each plain input's position among all inputs, and its path.
    inputs: Vec<(usize, &'a Path)>,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// The next of `inputs` to open.
    next_input: usize,
    current: Option<Current>,
    /// Set when a file could not be opened, or the run is stopping: no more pieces.
    stopped: bool,
}

struct Current {
    input: usize,
    name: Arc<str>,
    file: Arc<PieceFile>,
    next: u64,
}

/// One piece to read: of the input at position `input` among all inputs.
pub(crate) struct Piece {
    pub input: usize,
    pub name: Arc<str>,
    pub file: Arc<PieceFile>,
    pub k: u64,
}

impl<'a> PieceQueue<'a> {
    pub(crate) fn new(inputs: Vec<(usize, &'a Path)>) -> Self {
        PieceQueue {
            inputs,
            state: Mutex::new(QueueState::default()),
        }
    }

    /// The next piece, opening the next file when the current one is all handed out; `None`
    /// when there is none left. A file that cannot be opened (removed since the run started)
    /// stops the queue and is returned as the error of its input.
    pub(crate) fn next(&self) -> Result<Option<Piece>, (usize, SourceError)> {
        // The lock guards a cursor: a panic while holding it leaves nothing half-done.
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if s.stopped {
                return Ok(None);
            }
            if let Some(c) = &mut s.current {
                if c.next < c.file.pieces() {
                    c.next += 1;
                    return Ok(Some(Piece {
                        input: c.input,
                        name: c.name.clone(),
                        file: c.file.clone(),
                        k: c.next - 1,
                    }));
                }
            }
            s.current = None;
            let Some(&(input, path)) = self.inputs.get(s.next_input) else {
                return Ok(None);
            };
            s.next_input += 1;
            match PieceFile::open(path) {
                Ok(Some(file)) => {
                    s.current = Some(Current {
                        input,
                        name: Arc::from(path.display().to_string()),
                        file: Arc::new(file),
                        next: 0,
                    })
                }
                // Replaced by a compressed file or a pipe since the run started.
                Ok(None) => {
                    s.stopped = true;
                    return Err((
                        input,
                        SourceError::Open {
                            path: path.to_path_buf(),
                            source: std::io::Error::other(
                                "the file changed while the run started (it is no longer a plain file); run again",
                            ),
                        },
                    ));
                }
                Err(e) => {
                    s.stopped = true;
                    return Err((input, e));
                }
            }
        }
    }

    /// Hands out no more pieces.
    pub(crate) fn stop(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stopped = true;
    }
}

/// What one worker read in pieces, to be numbered at the end of the run.
#[derive(Default)]
pub(crate) struct PieceReads {
    /// (input, piece, entries) of each piece read.
    pub pieces: Vec<(usize, u64, u64)>,
    /// Rejections to describe: (input, name, piece, entry index in the piece, reason).
    pub described: Vec<(usize, Arc<str>, u64, u64, &'static str)>,
    /// Read errors: (input, name, piece, error).
    pub failures: Vec<(usize, Arc<str>, u64, String)>,
}

/// The first line number of every piece read, from every worker's counts.
pub(crate) struct Numbering {
    /// (input, piece) → entries before the piece in its input.
    before: BTreeMap<(usize, u64), u64>,
}

impl Numbering {
    pub(crate) fn new<'r>(reads: impl IntoIterator<Item = &'r PieceReads>) -> Self {
        let mut counts: BTreeMap<(usize, u64), u64> = BTreeMap::new();
        for r in reads {
            for &(input, k, n) in &r.pieces {
                counts.insert((input, k), n);
            }
        }
        let mut before = BTreeMap::new();
        let mut input_now = None;
        let mut sum = 0;
        for ((input, k), n) in counts {
            if input_now != Some(input) {
                input_now = Some(input);
                sum = 0;
            }
            before.insert((input, k), sum);
            sum += n;
        }
        Numbering { before }
    }

    /// The 1-based line number of entry `index` of piece `k` of `input`.
    pub(crate) fn line(&self, input: usize, k: u64, index: u64) -> u64 {
        self.before.get(&(input, k)).copied().unwrap_or(0) + index + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_across_pieces_and_workers() {
        let a = PieceReads {
            pieces: vec![(0, 0, 10), (0, 2, 7), (3, 1, 4)],
            ..PieceReads::default()
        };
        let b = PieceReads {
            pieces: vec![(0, 1, 5), (3, 0, 0), (3, 2, 9)],
            ..PieceReads::default()
        };
        let n = Numbering::new([&a, &b]);
        assert_eq!(n.line(0, 0, 0), 1);
        assert_eq!(n.line(0, 1, 0), 11);
        assert_eq!(n.line(0, 2, 6), 22);
        assert_eq!(n.line(3, 0, 0), 1);
        assert_eq!(n.line(3, 1, 3), 4);
        assert_eq!(n.line(3, 2, 0), 5);
    }

    #[test]
    fn the_queue_hands_out_each_piece_once_file_after_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        let empty = dir.path().join("empty.log");
        let size = logcensus_source::PIECE_BYTES as usize;
        std::fs::write(&a, vec![b'x'; size * 2 + 1]).unwrap();
        std::fs::write(&b, vec![b'y'; 3]).unwrap();
        std::fs::write(&empty, b"").unwrap();
        let q = PieceQueue::new(vec![(1, &a), (2, &empty), (4, &b)]);
        let mut got = Vec::new();
        while let Some(p) = q.next().unwrap() {
            got.push((p.input, p.k, p.name.to_string()));
        }
        let name = |p: &Path| p.display().to_string();
        assert_eq!(
            got,
            [
                (1, 0, name(&a)),
                (1, 1, name(&a)),
                (1, 2, name(&a)),
                (4, 0, name(&b))
            ]
        );
        // A file gone since the run started stops the queue with its input's error.
        let gone = dir.path().join("gone.log");
        let q = PieceQueue::new(vec![(0, &b), (1, &gone), (2, &a)]);
        assert_eq!(q.next().unwrap().unwrap().input, 0);
        let (i, e) = q.next().err().unwrap();
        assert_eq!(i, 1);
        assert!(e.to_string().contains("gone.log"), "{e}");
        assert!(q.next().unwrap().is_none());
    }
}
