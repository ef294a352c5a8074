//! Drives a job: source → parse → policy → enrich → aggregate → sink.
//!
//! Reader threads (one input each at a time, one reader per two workers) cut inputs into
//! batches of lines and send them over a bounded channel (so a slow worker applies backpressure
//! instead of growing memory). Each worker thread owns its parser, User-Agent cache, GeoIP
//! cache, visitor keys and partial aggregates; at the end the partials merge exactly (the
//! region and client cells built once from every worker's visitor records) and the tables are
//! written.
//!
//! The per-line path ([`worker::LineWorker::line`]) is where the policy is enforced: it reads
//! only the fields the policy names, turns the address into a place and a visitor hash, and lets
//! nothing else through.

mod metrics;
mod pieces;
mod publish;
mod stream;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logcensus_aggregate::{Aggregates, Front, Rejection, Settled, VisitorSecret};
use logcensus_enrich::{GeoDb, GeoError, UaClassifier};
use logcensus_policy::{Pipeline, TableName};
use logcensus_release::{Calibration, SelectionKey, TableRelease};
use logcensus_sink::{RunMetadata, SinkError, WrittenFile};
use logcensus_source::{
    open_counted, open_input, ByteCounter, Input, LineReader, PieceFile, SourceError,
};

use pieces::{Numbering, Piece, PieceQueue, PieceReads};

pub use metrics::Metrics;
pub use publish::{date_name, publish, PublishOptions, PublishSummary};
pub use stream::{run_stream, StreamOptions, StreamSummary};
pub use worker::{LineWorker, Outcome, Stages};

/// Everything a run needs, after command-line overrides.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub pipeline: Pipeline,
    pub inputs: Vec<Input>,
    pub out: PathBuf,
    pub geoip: Option<PathBuf>,
    /// The database's address index (`logcensus geoip-index`), if any.
    pub geoip_index: Option<PathBuf>,
    pub secret: VisitorSecret,
    /// Worker threads (at least 1).
    pub threads: usize,
    /// Whether a batch run binds each of its workers to a core of its own (`--no-pin`: not).
    pub pin_workers: bool,
    /// Allow replacing files of dates released with differential privacy.
    pub rerelease: bool,
}

/// Why a run stopped. Messages name the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Geo(#[from] GeoError),
    /// The address index a run used is damaged (found before anything was written).
    #[error("{0} (or run without it); nothing was written")]
    GeoIndex(logcensus_enrich::IndexError),
    /// An address index that could not be made (`geoip-index`) or does not fit its database
    /// (`validate`).
    #[error(transparent)]
    Index(logcensus_enrich::IndexError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the table traffic_by_region needs a GeoIP database; set [geoip] database in {pipeline} or pass --geoip FILE.mmdb")]
    NoGeoDatabase { pipeline: String },
    #[error("cannot write address index {path}: {source}; check that its directory exists and is writable")]
    WriteIndex {
        path: String,
        source: std::io::Error,
    },
    #[error("no input: set [source] inputs in {pipeline} or pass --input PATH (`-` for stdin)")]
    NoInput { pipeline: String },
    #[error(transparent)]
    Release(#[from] logcensus_release::DpError),
    #[error(transparent)]
    Kafka(#[from] logcensus_kafka::KafkaError),
    #[error(transparent)]
    State(#[from] logcensus_state::StateError),
    #[error("checkpoint failed: {0}; the worker stopped without committing, so the records since its last checkpoint will be read again")]
    Checkpoint(String),
    #[error("streaming needs a persistent visitor key shared by every worker of the group: pass --visitor-key-file FILE (or set LOGCENSUS_VISITOR_KEY_FILE); with a random key, workers would count one visitor as several")]
    StreamNeedsKey,
    #[error("{path} exists and was released with differential privacy: releasing the same date again draws fresh noise, and averaging releases undoes it. Write to another --out, or pass --rerelease if the earlier release never left this machine")]
    Rerelease { path: String },
    #[error("another publish holds {path}; wait for it (one publisher at a time)")]
    PublishBusy { path: String },
}

/// How each demographic table of `pipeline` is released (k, bounds, calibrated DP), or an error
/// when the DP parameters cannot be met.
pub fn release_plan(
    pipeline: &Pipeline,
) -> Result<BTreeMap<TableName, TableRelease>, logcensus_release::DpError> {
    let mut plan = BTreeMap::new();
    for &table in &pipeline.tables {
        if table == TableName::TrafficQuality {
            continue;
        }
        let min_visitors = pipeline.min_visitors.get(&table).copied();
        let dp = match pipeline.dp.get(&table) {
            Some(spec) => Some(Calibration::new(
                table.name(),
                *spec,
                &pipeline.bounds,
                min_visitors,
                table == TableName::TrafficByRegion,
            )?),
            None => None,
        };
        let mut bounds = pipeline.bounds;
        if table != TableName::TrafficByRegion {
            bounds.max_bytes_per_row = None; // only traffic_by_region counts bytes
        }
        plan.insert(
            table,
            TableRelease {
                min_visitors,
                bounds,
                dp,
            },
        );
    }
    Ok(plan)
}

/// An input that ended early (its complete lines were counted), or, for a plain file read in
/// pieces, a piece that could not be read (the rest of the file was).
#[derive(Debug, Clone)]
pub struct InputFailure {
    pub input: String,
    pub after_line: u64,
    pub error: String,
    /// True when the input ended there; false when only one piece after that line was lost.
    pub ended: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Lines (and over-long or truncated fragments) read.
    pub lines_read: u64,
    /// Lines counted as requests.
    pub parsed: u64,
    /// Rejected lines by reason, in column order.
    pub rejected: Vec<(&'static str, u64)>,
    /// Rows written per table.
    pub rows: Vec<(&'static str, usize)>,
    pub files: Vec<WrittenFile>,
    pub input_failures: Vec<InputFailure>,
    pub elapsed: Duration,
}

impl Summary {
    /// Total rejected lines.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// Lines per second over the whole run.
    pub fn lines_per_second(&self) -> f64 {
        self.lines_read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs a job to the end and writes its tables.
pub fn run(opts: &RunOptions, progress: &ByteCounter) -> Result<Summary, RunError> {
    let started = Instant::now();
    let pipeline = &opts.pipeline;
    if opts.inputs.is_empty() {
        return Err(RunError::NoInput {
            pipeline: pipeline.path.display().to_string(),
        });
    }
    if pipeline.policy.user_agent.read {
        // Not joined: it ends within milliseconds, and a worker that needs what it builds
        // waits for it there (see `UaClassifier::warm_up`).
        let _ = std::thread::Builder::new()
            .name("ua-warm-up".into())
            .spawn(UaClassifier::warm_up);
    }
    let geo = open_geo(
        pipeline,
        opts.geoip.as_deref(),
        opts.geoip_index.as_deref(),
        false,
    )?;
    // Calibrated before any line is read: parameters that cannot be met fail the run at once.
    let plan = release_plan(pipeline)?;
    // A table released as counted needs only how many visitors each row has, not which: the
    // workers' visitors are disjoint (each counted by the worker that owns it), so their numbers
    // add up without putting every visitor into one set. A table the pipeline does not write
    // needs not even that.
    let counts_only: Vec<TableName> = TableName::ALL
        .iter()
        .copied()
        .filter(|&t| !pipeline.has_table(t) || plan.get(&t).is_none_or(TableRelease::is_exact))
        .collect();
    // Check that every file can be opened and read before reading any, so an unreadable file
    // fails the run at once; then open them one at a time (thousands of inputs must not hold
    // thousands of descriptors and buffers). Plain files are read in pieces by the workers;
    // compressed files and stdin are streams, cut into batches by reader threads.
    let mut plain = Vec::new();
    let mut streams = Vec::new();
    for (i, input) in opts.inputs.iter().enumerate() {
        match input {
            Input::File(path) if is_regular(path)? => {
                if PieceFile::open(path)?.is_some() {
                    plain.push((i, path.as_path()));
                } else {
                    drop(open_input(input)?);
                    streams.push((i, input));
                }
            }
            // A named pipe (or `<(zcat ...)`) is opened once, when it is read: opening it to
            // check would take its writer's first bytes, or its writer.
            Input::File(_) | Input::Stdin => streams.push((i, input)),
        }
    }
    let pieces = PieceQueue::new(plain);

    let threads = opts.threads.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<(Arc<str>, logcensus_source::Batch)>(threads * 2);
    // Spent batches go back to the readers, which refill them: no allocation per batch, and
    // a reader writes into memory that is already mapped (fresh pages cost a fault each).
    let (spent_tx, spent_rx) = crossbeam_channel::bounded::<logcensus_source::Batch>(threads * 2);
    // Several streams are read (and decompressed) at once, one reader per two workers: a
    // compressed file is read on one core, and one core decompressing gzip feeds about two
    // workers, so a backfill of many `.gz` files on many cores would otherwise wait on one.
    // (With 2 workers, one reader: on 2 cores a second one only competes with the workers.)
    let readers = threads.div_ceil(2).min(streams.len());
    let next_input = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    type Worked = (
        Aggregates,
        Settled,
        PieceReads,
        Option<(usize, SourceError)>,
    );
    let (worked, reads): (Vec<Worked>, Vec<Reads>) = std::thread::scope(|scope| {
        // The workers share their visitors out: each visitor's records are kept by one worker.
        let cores = worker_cores(opts.pin_workers, threads);
        let workers: Vec<_> = Front::shared(threads)
            .into_iter()
            .enumerate()
            .map(|(i, mut front)| {
                let core = cores.as_ref().map(|cores| cores[i]);
                if counts_only.contains(&TableName::Referrers) {
                    front.count_referrers_only();
                }
                let rx = rx.clone();
                let spent_tx = spent_tx.clone();
                let geo = geo.as_ref();
                let (pieces, stop) = (&pieces, &stop);
                scope.spawn(move || {
                    // Should the system refuse, the worker runs where the scheduler puts it.
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let mut w = LineWorker::with_front(pipeline, geo, opts.secret.clone(), front);
                    let mut piece_reads = PieceReads::default();
                    let mut open_error = None;
                    // This worker's buffer for the pieces it reads.
                    let mut own = logcensus_source::Batch::default();
                    loop {
                        // The readers' batches first: a reader waits while its batches do.
                        let (input, batch) = match rx.try_recv() {
                            Ok(got) => got,
                            Err(_) => match pieces.next() {
                                Ok(Some(p)) => {
                                    read_piece(
                                        &mut w,
                                        &p,
                                        pipeline,
                                        progress,
                                        &mut own,
                                        &mut piece_reads,
                                    );
                                    continue;
                                }
                                Ok(None) => match rx.recv() {
                                    Ok(got) => got,
                                    Err(_) => break,
                                },
                                Err(e) => {
                                    open_error = Some(e);
                                    stop.store(true, Ordering::Relaxed);
                                    continue;
                                }
                            },
                        };
                        w.batch(&input, &batch);
                        // When the readers already have enough spares, this one is freed.
                        let _ = spent_tx.try_send(batch);
                    }
                    let lines_done = started.elapsed();
                    let (partial, settled) = w.into_parts();
                    tracing::debug!(
                        lines_ms = lines_done.as_millis() as u64,
                        settled_ms = started.elapsed().as_millis() as u64,
                        "worker finished"
                    );
                    (partial, settled, piece_reads, open_error)
                })
            })
            .collect();
        drop(rx);
        drop(spent_tx);
        let reader_threads: Vec<_> = (0..readers)
            .map(|_| {
                let tx = tx.clone();
                let spent_rx = spent_rx.clone();
                let (next_input, stop, pieces, streams) = (&next_input, &stop, &pieces, &streams);
                scope.spawn(move || {
                    let mut reads = Reads::default();
                    while !stop.load(Ordering::Relaxed) {
                        let next = next_input.fetch_add(1, Ordering::Relaxed);
                        let Some(&(i, input)) = streams.get(next) else {
                            break;
                        };
                        if let Err(e) =
                            read_input(i, input, pipeline, progress, &tx, &spent_rx, &mut reads)
                        {
                            reads.open_error = Some((i, e));
                            stop.store(true, Ordering::Relaxed);
                            pieces.stop();
                        }
                    }
                    reads
                })
            })
            .collect();
        drop(tx);
        let reads = reader_threads
            .into_iter()
            .map(|h| h.join().expect("a reader thread panicked"))
            .collect();
        let worked = workers
            .into_iter()
            .map(|h| h.join().expect("a worker thread panicked"))
            .collect();
        (worked, reads)
    });
    let mut partials = Vec::with_capacity(worked.len());
    let mut settled = Vec::with_capacity(worked.len());
    let mut piece_reads = Vec::with_capacity(worked.len());
    let mut open_errors = Vec::new();
    for (partial, s, pr, open_error) in worked {
        partials.push(partial);
        settled.push(s);
        piece_reads.push(pr);
        open_errors.extend(open_error);
    }
    let numbering = Numbering::new(&piece_reads);
    let lines_read = reads.iter().map(|r| r.lines).sum::<u64>()
        + piece_reads
            .iter()
            .flat_map(|r| &r.pieces)
            .map(|p| p.2)
            .sum::<u64>();
    // In the order of the inputs, whichever reader or worker met them.
    let mut failures: Vec<(usize, u64, InputFailure)> = Vec::new();
    for r in &piece_reads {
        for (input, name, k, index, reason) in &r.described {
            let line = numbering.line(*input, *k, *index);
            tracing::debug!(input = %name, line, reason, "line rejected");
        }
        for (input, name, k, error) in &r.failures {
            let after_line = numbering.line(*input, *k, 0) - 1;
            tracing::warn!(
                input = %name,
                after_line,
                error = %error,
                "read error in the input; what it held after this line, up to the next piece (at most {} KiB), is counted once as rejected (truncated_input), and the rest of the input is read",
                logcensus_source::PIECE_BYTES / 1024
            );
            failures.push((
                *input,
                after_line,
                InputFailure {
                    input: name.to_string(),
                    after_line,
                    error: error.clone(),
                    ended: false,
                },
            ));
        }
    }
    let mut open_error: Option<(usize, SourceError)> = None;
    for r in reads {
        failures.extend(r.failures.into_iter().map(|(i, f)| (i, f.after_line, f)));
        open_errors.extend(r.open_error);
    }
    for (i, e) in open_errors {
        if open_error.as_ref().is_none_or(|(j, _)| i < *j) {
            open_error = Some((i, e));
        }
    }
    failures.sort_by_key(|(i, line, _)| (*i, *line));
    let failures: Vec<InputFailure> = failures.into_iter().map(|(_, _, f)| f).collect();
    let open_error = open_error.map(|(_, e)| e);

    if let Some(e) = open_error {
        return Err(e.into());
    }
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "every line counted"
    );
    let mut total = Aggregates::new(pipeline.period, pipeline.crawlers);
    // The region and client cells are built once from every worker's visitor records (on two
    // threads) while the partials (referrer cells, traffic quality) merge on this one.
    let cells = std::thread::scope(|s| {
        let cells = s.spawn(|| Settled::build(&mut settled, threads, &counts_only));
        for p in partials {
            total.merge_disjoint(p, &counts_only);
        }
        cells
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    cells.add_into(&mut total);
    // Every place came from the address index, if any, as its file was meant to be: else
    // nothing is written.
    if let Some(geo) = &geo {
        geo.index_intact().map_err(RunError::GeoIndex)?;
    }
    // Nothing reads the visitor records or the database any more. Freeing the one and
    // unmapping the other take milliseconds (tens of megabytes, most pages of the database
    // touched); they go on beside the release and the writes, which wait on the disk, instead
    // of before them (begun before `add_into`, they slowed it from under 1 ms to 4). Should no
    // thread start, dropping the closure frees them here.
    let freeing = std::thread::Builder::new()
        .name("free".into())
        .spawn(move || drop((settled, geo)));
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "partials merged"
    );
    let parsed = total.requests();
    let rejections = total.rejections();
    let rejected = Rejection::all()
        .iter()
        .map(|r| (r.name(), rejections[r.index()]))
        .collect();
    // Disclosure control sees complete periods: every partial is merged by now.
    let (rows, files) = release_and_write(
        pipeline,
        &plan,
        total,
        &opts.out,
        &opts.secret,
        opts.rerelease,
    )?;
    if let Ok(freeing) = freeing {
        let _ = freeing.join();
    }
    Ok(Summary {
        lines_read,
        parsed,
        rejected,
        rows,
        files,
        input_failures: failures,
        elapsed: started.elapsed(),
    })
}

/// What one reader thread did.
#[derive(Default)]
struct Reads {
    lines: u64,
    /// Inputs that ended early, by their position among the inputs.
    failures: Vec<(usize, InputFailure)>,
    open_error: Option<(usize, SourceError)>,
}

/// Reads input `i` into batches for the workers. Read errors end the input, not the run (its
/// complete lines count; see [`LineReader::take_failure`]); only failing to open it is an error.
fn read_input(
    i: usize,
    input: &Input,
    pipeline: &Pipeline,
    progress: &ByteCounter,
    tx: &crossbeam_channel::Sender<(Arc<str>, logcensus_source::Batch)>,
    spent: &crossbeam_channel::Receiver<logcensus_source::Batch>,
    reads: &mut Reads,
) -> Result<(), SourceError> {
    let name: Arc<str> = Arc::from(input.to_string());
    let mut lr = LineReader::new(open_counted(input, progress)?, pipeline.max_line_bytes);
    while let Ok(Some(batch)) = lr.next_batch_in(spent.try_recv().unwrap_or_default()) {
        reads.lines += batch.entries.len() as u64;
        if tx.send((name.clone(), batch)).is_err() {
            break;
        }
    }
    if let Some(f) = lr.take_failure() {
        tracing::warn!(
            input = %name,
            after_line = f.after_line,
            error = %f.error,
            "input ended early; its complete lines were counted and the damaged rest is counted as rejected (truncated_input)"
        );
        reads.failures.push((
            i,
            InputFailure {
                input: name.to_string(),
                after_line: f.after_line,
                error: f.error.to_string(),
                ended: true,
            },
        ));
    }
    Ok(())
}

/// Whether `path` is a regular file (not a pipe or a device).
fn is_regular(path: &std::path::Path) -> Result<bool, SourceError> {
    std::fs::metadata(path)
        .map(|m| m.is_file())
        .map_err(|source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// The cores a batch run's `threads` workers are bound to, one each: the first `threads` of
/// those this process may run on, when `pin` and there are at least two workers and as many
/// such cores. Unbound, workers that wait on each other at the start of a run (a lock, a table
/// another is making) were woken on the waker's core, and the scheduler then left two workers
/// taking turns on one core while the other idled for up to 35 ms (`perf sched`, 1M-line
/// benchmark); bound, each keeps its own. Pieces go to whichever worker is free, so a worker
/// whose core is busy with something else reads fewer of them.
fn worker_cores(pin: bool, threads: usize) -> Option<Vec<core_affinity::CoreId>> {
    if !pin || threads < 2 {
        return None;
    }
    let mut cores = core_affinity::get_core_ids()?;
    if cores.len() < threads {
        return None;
    }
    cores.truncate(threads);
    Some(cores)
}

/// Reads piece `p` into `own` and counts it; what the end of the run has to number goes to
/// `reads`.
fn read_piece(
    w: &mut LineWorker<'_>,
    p: &Piece,
    pipeline: &Pipeline,
    progress: &ByteCounter,
    own: &mut logcensus_source::Batch,
    reads: &mut PieceReads,
) {
    let error = p
        .file
        .read_piece(p.k, pipeline.max_line_bytes, own, progress);
    w.batch_describing(own, |index, reason| {
        reads
            .described
            .push((p.input, p.name.clone(), p.k, index, reason));
    });
    reads.pieces.push((p.input, p.k, own.entries.len() as u64));
    if let Some(e) = error {
        reads
            .failures
            .push((p.input, p.name.clone(), p.k, e.to_string()));
    }
}

/// Opens the GeoIP database, if any; an error when `traffic_by_region` needs one. With an
/// `index` (see `logcensus geoip-index`), IPv4 addresses are looked up in it; an index that
/// cannot be used with this database (made from another, or with other fields, or unreadable)
/// is left out with a warning that says how to make the right one: the answers are the same
/// without it, only slower. Its checksum is checked meanwhile: a batch run asks for the result
/// before it writes ([`GeoDb::index_intact`]); with `check_now` (a streaming worker) it is
/// waited for here, and a damaged index is left out too.
pub(crate) fn open_geo(
    pipeline: &Pipeline,
    path: Option<&std::path::Path>,
    index: Option<&std::path::Path>,
    check_now: bool,
) -> Result<Option<GeoDb>, RunError> {
    let mut geo = match path {
        Some(path) => GeoDb::open(path, &pipeline.geo_fields, pipeline.geo_level)?,
        None if pipeline.has_table(TableName::TrafficByRegion) => {
            return Err(RunError::NoGeoDatabase {
                pipeline: pipeline.path.display().to_string(),
            })
        }
        None => {
            if let Some(index) = index {
                tracing::warn!(
                    index = %index.display(),
                    "an address index without a GeoIP database is not used; set [geoip] database or pass --geoip"
                );
            }
            return Ok(None);
        }
    };
    tracing::info!(database = %geo.description, "GeoIP database opened");
    if let Some(index) = index {
        let used = geo.use_index(index).and_then(|()| match check_now {
            true => geo.index_intact(),
            false => Ok(()),
        });
        match used {
            Ok(()) => tracing::info!(index = %index.display(), "address index in use"),
            Err(e) => {
                geo.forget_index();
                tracing::warn!("{e}; looking addresses up in the database itself");
            }
        }
    }
    Ok(Some(geo))
}

/// Whether the address index at `index` can be used with the GeoIP database at `geoip` read
/// with `pipeline`'s `[geoip.fields]`: made from that database with those fields, and intact.
pub fn check_geoip_index(
    pipeline: &Pipeline,
    geoip: &std::path::Path,
    index: &std::path::Path,
) -> Result<(), RunError> {
    let mut db = GeoDb::open(geoip, &pipeline.geo_fields, pipeline.geo_level)?;
    db.use_index(index)
        .and_then(|()| db.index_intact())
        .map_err(RunError::Index)
}

/// Makes the address index of the GeoIP database at `geoip`, read with `pipeline`'s
/// `[geoip.fields]`, and writes it to `out` (in place of any file there, whole or not at
/// all: written beside it, synced, renamed). Returns its size in bytes.
pub fn make_geoip_index(
    pipeline: &Pipeline,
    geoip: &std::path::Path,
    out: &std::path::Path,
) -> Result<u64, RunError> {
    let bytes = GeoDb::make_index(geoip, &pipeline.geo_fields).map_err(RunError::Index)?;
    let write = || -> std::io::Result<()> {
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let name = out.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name")
        })?;
        let temp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, out)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| RunError::WriteIndex {
        path: out.display().to_string(),
        source,
    })?;
    Ok(bytes.len() as u64)
}

/// Rows written per table.
pub type RowCounts = Vec<(&'static str, usize)>;

/// Releases complete periods (`total` holds every partial of them, merged) through the release
/// plan and writes the tables: the end of a batch run and of a publish.
pub(crate) fn release_and_write(
    pipeline: &Pipeline,
    plan: &BTreeMap<TableName, TableRelease>,
    total: Aggregates,
    out: &std::path::Path,
    secret: &VisitorSecret,
    rerelease: bool,
) -> Result<(RowCounts, Vec<WrittenFile>), RunError> {
    let key = SelectionKey::new(secret.selection_key());
    let mut release_error = None;
    // Phase times at debug level, from the start of this step.
    let begun = Instant::now();
    let tables = total.finish_with(&pipeline.tables, |table, rows| {
        // A table released as counted needs no row's set of visitors.
        let Some(how) = plan.get(&table).filter(|how| !how.is_exact()) else {
            return rows.exact();
        };
        match logcensus_release::release_table(table, rows.with_visitors(), how, key) {
            Ok((rows, stats)) => {
                log_release(table, how, &stats);
                rows
            }
            Err(e) => {
                release_error.get_or_insert(e);
                Vec::new()
            }
        }
    });
    if let Some(e) = release_error {
        return Err(e.into());
    }
    // A date released with DP is released once: a second release of the same data with fresh
    // noise lets the noise be averaged away.
    if !rerelease {
        for t in &tables {
            let noisy = plan
                .iter()
                .any(|(name, how)| name.name() == t.name && how.dp.is_some());
            let Some((_, logcensus_aggregate::Column::Timestamp(periods))) = t.columns.first()
            else {
                continue;
            };
            if !noisy {
                continue;
            }
            let dates: std::collections::BTreeSet<i64> =
                periods.iter().map(|p| publish::date_of(*p)).collect();
            for d in dates {
                let file = out
                    .join(t.name)
                    .join(format!("date={}", date_name(d)))
                    .join(logcensus_sink::PART_FILE);
                if file.exists() {
                    return Err(RunError::Rerelease {
                        path: file.display().to_string(),
                    });
                }
            }
        }
    }
    let rows = tables.iter().map(|t| (t.name, t.num_rows())).collect();
    let meta = RunMetadata {
        pipeline: pipeline.name.clone(),
        policy_id: pipeline.policy.id.clone(),
        policy_hash: pipeline.policy_hash.clone(),
        period: pipeline.period.name().to_string(),
        geo_level: pipeline.geo_level.name().to_string(),
        extra: Vec::new(),
        table_extra: plan
            .iter()
            .flat_map(|(t, how)| {
                how.metadata()
                    .into_iter()
                    .map(|(k, v)| (t.name().to_string(), k, v))
            })
            .collect(),
    };
    tracing::debug!(
        elapsed_ms = begun.elapsed().as_millis() as u64,
        "tables released"
    );
    // One call: the sink checks every table against its contract before writing any.
    let files = logcensus_sink::write_tables(out, &tables, &meta)?;
    tracing::debug!(
        elapsed_ms = begun.elapsed().as_millis() as u64,
        "tables written"
    );
    Ok((rows, files))
}

/// One log line per released table: what the release step did (counts only).
fn log_release(table: TableName, how: &TableRelease, stats: &logcensus_release::TableStats) {
    let b = &stats.bounds;
    if how.bounds.any() {
        tracing::info!(
            table = table.name(),
            dropped_visitor_rows = b.dropped_pairs,
            dropped_requests = b.dropped_requests,
            emptied_rows = b.emptied_rows,
            "contributions bounded"
        );
    }
    if let Some(dp) = &how.dp {
        tracing::info!(
            table = table.name(),
            mechanism = dp.spec.mechanism.name(),
            epsilon = dp.spec.epsilon,
            delta = dp.spec.delta,
            under_minimum = stats.dp.under_minimum,
            not_selected = stats.dp.not_selected,
            released = stats.dp.released,
            "differentially private release"
        );
    } else if let Some(k) = how.min_visitors {
        let s = &stats.small_cells;
        tracing::info!(
            table = table.name(),
            min_visitors = k,
            kept = s.kept_rows,
            rolled_up = s.rolled_up_rows,
            withheld = s.suppressed_rows,
            withheld_requests = s.suppressed_requests,
            "small cells rolled up into (other) rows or withheld"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers are bound to distinct cores this process may use, only when asked, when there
    /// are two or more, and when there are enough cores.
    #[test]
    fn workers_are_bound_to_cores_of_their_own() {
        assert!(worker_cores(false, 2).is_none());
        assert!(worker_cores(true, 1).is_none());
        assert!(worker_cores(true, 100_000).is_none());
        let allowed = core_affinity::get_core_ids().unwrap();
        if allowed.len() >= 2 {
            let cores = worker_cores(true, 2).unwrap();
            assert_eq!(cores, allowed[..2]);
            assert_ne!(cores[0], cores[1]);
        } else {
            assert!(worker_cores(true, 2).is_none());
        }
    }
}
