//! Plain files read in pieces, by many threads at once.
//!
//! A regular file that is not compressed need not go through one reader: its bytes can be read
//! at any offset. [`PieceFile`] cuts it into pieces of [`PIECE_BYTES`]; a line belongs to the
//! piece its first byte is in, so each piece's lines can be found by whoever reads that piece,
//! with no word from the readers of the pieces before it. A worker reads a piece with one
//! positioned read into its own buffer (the bytes then sit in the cache of the core that
//! parses them) and counts its lines; nothing is copied again, and no thread only reads.
//!
//! The entries are those [`crate::LineReader`] gives for the same bytes, piece after piece:
//! the same lines, over-long lines rejected alike (read up to the limit, never buffered whole),
//! `\r\n` endings, a last line without a newline. Line numbers are not known when a piece is
//! read (they depend on every piece before it): a batch from a piece has `first_line` 0, and
//! whoever needs a number counts each piece's entries ([`PieceFile::pieces`] says how many
//! pieces there are).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::marks::{marks_in, next_mark};
use crate::{Batch, ByteCounter, Entry, SourceError};

/// How many bytes of a file a piece covers: about a batch, and small enough that a piece read
/// into a worker's buffer is still in that core's cache when its lines are parsed.
pub const PIECE_BYTES: u64 = 256 * 1024;

/// Read past a piece's end at once, so that its last line is usually complete in one read.
const SLACK: u64 = 8 * 1024;

/// Reads start where the file offset and the buffer address agree modulo this (see
/// [`PieceFile::split_piece`]).
const ALIGN: u64 = 64;

/// A plain regular file, read in pieces ([`PieceFile::read_piece`]) from any thread.
#[derive(Debug)]
pub struct PieceFile {
    path: PathBuf,
    file: File,
    /// The file's length when it was opened: the pieces cover this much.
    len: u64,
    piece: u64,
}

impl PieceFile {
    /// Opens `path` for reading in pieces when it is a regular file whose first bytes are not a
    /// gzip or zstd header; `None` for anything else (a pipe, a compressed file), which is read
    /// through [`crate::open_input`] as a stream.
    pub fn open(path: &Path) -> Result<Option<PieceFile>, SourceError> {
        Self::with_piece_bytes(path, PIECE_BYTES)
    }

    /// [`PieceFile::open`] with pieces of `piece` bytes (at least 1).
    pub fn with_piece_bytes(path: &Path, piece: u64) -> Result<Option<PieceFile>, SourceError> {
        let open_error = |source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        let meta = file.metadata().map_err(open_error)?;
        if !meta.is_file() || !cfg!(unix) {
            return Ok(None);
        }
        let mut magic = [0u8; 4];
        let n = read_at(&file, &mut magic, 0).map_err(open_error)?;
        if n == 4 && (magic[..2] == [0x1f, 0x8b] || magic == [0x28, 0xb5, 0x2f, 0xfd]) {
            return Ok(None);
        }
        Ok(Some(PieceFile {
            path: path.to_path_buf(),
            file,
            len: meta.len(),
            piece: piece.max(1),
        }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many pieces the file has (0 for an empty file).
    pub fn pieces(&self) -> u64 {
        self.len.div_ceil(self.piece)
    }

    /// Fills `batch` (its buffer reused) with the entries of the lines that start in piece `k`,
    /// adding the piece's bytes to `progress`. `first_line` is set to 0: see the module docs.
    ///
    /// A read error leaves the piece as one [`Entry::Truncated`] and is returned alongside:
    /// the lines of every other piece still count.
    pub fn read_piece(
        &self,
        k: u64,
        max_line: usize,
        batch: &mut Batch,
        progress: &ByteCounter,
    ) -> Option<io::Error> {
        batch.entries.clear();
        batch.marks.clear();
        batch.first_line = 0;
        let start = k.saturating_mul(self.piece);
        if start >= self.len {
            return None;
        }
        let end = (start + self.piece).min(self.len);
        progress
            .0
            .fetch_add(end - start, std::sync::atomic::Ordering::Relaxed);
        match self.split_piece(start, end, max_line.max(1), batch) {
            Ok(()) => None,
            Err(e) => {
                batch.entries.clear();
                batch.marks.clear();
                batch.entries.push(Entry::Truncated);
                Some(e)
            }
        }
    }

    /// The work of [`PieceFile::read_piece`]. Buffer index `i` holds the file's byte `from + i`,
    /// where `from` is at most 64 bytes before the piece.
    fn split_piece(
        &self,
        start: u64,
        end: u64,
        max_line: usize,
        batch: &mut Batch,
    ) -> io::Result<()> {
        // The byte before the piece says whether the piece starts a line. The read starts up to
        // 63 bytes earlier still, where the file offset and the buffer address agree modulo 64:
        // the kernel's copy into the buffer runs several times slower when they do not (a
        // whole-run profile had it at 13% of samples instead of 3%).
        let want = (end + SLACK - start.saturating_sub(ALIGN)) as usize;
        batch.data.reserve(want.saturating_sub(batch.data.len()));
        let before = start.saturating_sub(1);
        let skew = (before.wrapping_sub(batch.data.as_ptr() as u64)) % ALIGN;
        let from = before - skew.min(before);
        let mut buf = Buffer {
            file: &self.file,
            from,
            filled: 0,
            eof: false,
        };
        buf.fill_to(&mut batch.data, (end + SLACK - from) as usize)?;
        batch.marks.mark(&batch.data[..buf.filled], 0);
        // Buffer index of the piece's end: lines starting before it are this piece's.
        let stop = (end - from) as usize;
        let mut pos = if start == 0 {
            0
        } else {
            // The first line that starts in the piece follows the first newline from the byte
            // before it.
            let lead = (before - from) as usize;
            match next_mark(&batch.marks.newlines, lead, stop.min(buf.filled)) {
                Some(nl) => nl + 1,
                None => return Ok(()),
            }
        };
        // The lines whose newlines have been read, from a list of those newlines.
        let mut newlines = std::mem::take(&mut batch.newlines);
        marks_in(&batch.marks.newlines, pos, buf.filled, &mut newlines);
        for &nl in &newlines {
            if pos >= stop {
                break;
            }
            push_line(batch, pos, nl as usize, max_line);
            pos = nl as usize + 1;
        }
        batch.newlines = newlines;
        while pos < stop {
            if let Some(nl) = next_mark(&batch.marks.newlines, pos, buf.filled) {
                push_line(batch, pos, nl, max_line);
                pos = nl + 1;
                continue;
            }
            // The line goes on past what has been read.
            if buf.eof {
                // The last line of the file, without a newline.
                let tail = buf.filled - pos;
                if tail > max_line {
                    batch.entries.push(Entry::TooLong);
                } else if tail > 0 {
                    push_line(batch, pos, buf.filled, max_line);
                }
                return Ok(());
            }
            if buf.filled - pos > max_line {
                // Over the limit whatever follows; its end, and the next line's start, are
                // past this piece.
                batch.entries.push(Entry::TooLong);
                return Ok(());
            }
            // Enough to see the line's newline if it is within the limit (or the end of file).
            let want = (pos + max_line + 1).max(buf.filled + SLACK as usize);
            let marked = buf.filled;
            buf.fill_to(&mut batch.data, want)?;
            batch.marks.mark(&batch.data[..buf.filled], marked);
        }
        Ok(())
    }
}

/// Records the line `data[start..nl]` (`nl` is its newline, or the end of the file), or its
/// rejection when it is over `max_line` bytes; a `\r` before the newline is not part of it.
fn push_line(batch: &mut Batch, start: usize, nl: usize, max_line: usize) {
    if nl - start > max_line {
        batch.entries.push(Entry::TooLong);
        return;
    }
    let end = if nl > start && batch.data[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    batch.entries.push(Entry::Line {
        start: start as u32,
        end: end as u32,
    });
}

/// Positioned reads into a batch's buffer.
struct Buffer<'f> {
    file: &'f File,
    /// The file offset of the buffer's first byte.
    from: u64,
    /// How many bytes of the buffer hold the file's.
    filled: usize,
    /// True once a read met the end of the file.
    eof: bool,
}

impl Buffer<'_> {
    /// Reads until the buffer holds `want` bytes of the file, or the file ends. The buffer keeps
    /// the length it grew to (only growth is zeroed).
    fn fill_to(&mut self, data: &mut Vec<u8>, want: usize) -> io::Result<()> {
        if data.len() < want {
            data.resize(want, 0);
        }
        while self.filled < want && !self.eof {
            match read_at(
                self.file,
                &mut data[self.filled..want],
                self.from + self.filled as u64,
            ) {
                Ok(0) => self.eof = true,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_at(_: &File, _: &mut [u8], _: u64) -> io::Result<usize> {
    // `PieceFile::open` says `None` off Unix: files are read as streams there.
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_all_entries;

    /// Every entry of `file` read piece by piece, with its bytes.
    fn by_pieces(file: &PieceFile, max_line: usize) -> Vec<(Entry, Vec<u8>)> {
        let mut batch = Batch::default();
        let mut out = Vec::new();
        for k in 0..file.pieces() + 2 {
            assert!(file
                .read_piece(k, max_line, &mut batch, &ByteCounter::default())
                .is_none());
            assert_eq!(batch.first_line, 0);
            // The quote marks are exact over every line.
            for e in &batch.entries {
                if let Entry::Line { start, end } = *e {
                    let quotes = batch.quotes().expect("a piece's quotes are marked");
                    for i in start as usize..end as usize {
                        let marked = quotes[i / 64] >> (i % 64) & 1 == 1;
                        assert_eq!(marked, batch.data[i] == b'"', "byte {i}");
                    }
                }
            }
            out.extend(crate::entries_with_bytes(&batch));
        }
        out
    }

    /// Entries without their positions (which depend on the buffer), for comparison.
    fn shape(entries: &[(Entry, Vec<u8>)]) -> Vec<(u8, Vec<u8>)> {
        entries
            .iter()
            .map(|(e, b)| {
                let kind = match e {
                    Entry::Line { .. } => 0,
                    Entry::TooLong => 1,
                    Entry::Truncated => 2,
                };
                (kind, b.clone())
            })
            .collect()
    }

    /// A tiny seeded generator (xorshift), so the test needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Pieces give the stream reader's entries, whatever the piece size and the contents: empty
    /// lines, `\r\n`, lines at, just over and far over the limit (some spanning many pieces),
    /// newlines on piece boundaries, with and without a final newline.
    #[test]
    fn pieces_hold_the_stream_readers_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let max_line = 40;
        for case in 0..300 {
            let mut data = Vec::new();
            let lines = rng.below(60);
            for i in 0..lines {
                let len = match rng.below(10) {
                    0 => 0,
                    1 => max_line as u64,
                    2 => max_line as u64 + 1,
                    3 => max_line as u64 + rng.below(300),
                    _ => rng.below(max_line as u64),
                };
                data.extend((0..len).map(|j| match (i + j) % 29 {
                    26..=28 => b'"',
                    k => b'a' + k as u8,
                }));
                if rng.below(5) == 0 {
                    data.push(b'\r');
                }
                data.push(b'\n');
            }
            if rng.below(2) == 0 {
                // No final newline.
                data.extend((0..rng.below(80)).map(|_| b'z'));
            }
            std::fs::write(&path, &data).unwrap();
            let want = read_all_entries(&data[..], max_line);
            for piece in [1, 2, 3, 7, 16, 41, 64, 1000] {
                let file = PieceFile::with_piece_bytes(&path, piece).unwrap().unwrap();
                assert_eq!(file.pieces(), (data.len() as u64).div_ceil(piece));
                let got = by_pieces(&file, max_line);
                assert_eq!(shape(&got), shape(&want), "case {case}, pieces of {piece}");
            }
        }
    }

    #[test]
    fn compressed_files_and_directories_are_not_read_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("a.log");
        std::fs::write(&gz, crate::tests::gzip(b"1.2.3.4 x\n")).unwrap();
        assert!(PieceFile::open(&gz).unwrap().is_none());
        let zst = dir.path().join("b.log");
        std::fs::write(&zst, zstd::encode_all(&b"1.2.3.4 x\n"[..], 1).unwrap()).unwrap();
        assert!(PieceFile::open(&zst).unwrap().is_none());
        assert!(PieceFile::open(dir.path()).unwrap().is_none());
        let plain = dir.path().join("c.log");
        std::fs::write(&plain, b"1.2.3.4 x\n").unwrap();
        let file = PieceFile::open(&plain).unwrap().unwrap();
        assert_eq!(file.pieces(), 1);
        let progress = ByteCounter::default();
        let mut batch = Batch::default();
        assert!(file.read_piece(0, 100, &mut batch, &progress).is_none());
        assert_eq!(batch.entries, [Entry::Line { start: 0, end: 9 }]);
        assert_eq!(progress.get(), 10);
        let empty = dir.path().join("d.log");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(PieceFile::open(&empty).unwrap().unwrap().pieces(), 0);
        let missing = PieceFile::open(&dir.path().join("nope.log")).unwrap_err();
        assert!(missing.to_string().contains("nope.log"), "{missing}");
    }

    /// A file that shrinks while it is read (a log truncated by rotation) ends where it now
    /// ends: later pieces are empty, and the cut line counts as the last line.
    #[test]
    fn a_file_cut_short_while_read_ends_early() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.log");
        std::fs::write(&path, b"aaaa\nbbbb\ncccc\ndddd\n").unwrap();
        let file = PieceFile::with_piece_bytes(&path, 5).unwrap().unwrap();
        assert_eq!(file.pieces(), 4);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(7)
            .unwrap();
        let got = by_pieces(&file, 100);
        let lines: Vec<&[u8]> = got.iter().map(|(_, b)| &b[..]).collect();
        assert_eq!(lines, [&b"aaaa"[..], b"bb"]);
    }
}
