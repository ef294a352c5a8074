//! `logcensus`: the command line. Argument definitions and wiring only; the work is in the
//! pipeline crate.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use logcensus_aggregate::VisitorSecret;
use logcensus_pipeline::{RunOptions, Summary};
use logcensus_policy::Pipeline;
use logcensus_source::{expand_inputs, input_len, ByteCounter, Input};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Turns web server access logs into aggregate tables a site may share, and nothing more.
#[derive(Parser, Debug)]
#[command(name = "logcensus", version, about)]
struct Cli {
    /// Log level (error, warn, info, debug, trace), or comma-separated `target=level`
    /// directives (`warn,logcensus_pipeline=debug`); also LOGCENSUS_LOG.
    #[arg(long, global = true, default_value = "info", env = "LOGCENSUS_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a pipeline over files or stdin and writes its tables.
    Run(Box<RunArgs>),
    /// Checks a pipeline file and its policy without reading any log.
    Validate {
        /// The pipeline file.
        #[arg(long)]
        pipeline: PathBuf,
    },
    /// Checks a directory of released tables before it goes to a partner: layout, schema,
    /// metadata, small cells and values that look personal. Exits 1 on any violation.
    Audit {
        /// The release directory (the pipeline's output directory).
        dir: PathBuf,
        /// The pipeline the release was made with (its policy id and hash must match).
        #[arg(long)]
        pipeline: PathBuf,
        /// Minimum visitors per row to check (default: the files' own `min_visitors`).
        #[arg(long, value_name = "K")]
        min_visitors: Option<u64>,
    },
    /// Releases the closed dates a streaming group has checkpointed under `<out>/_state/` into
    /// the same tables a batch run writes. Idempotent: a published date is never published again.
    Publish {
        /// The pipeline file.
        #[arg(long)]
        pipeline: PathBuf,
        /// Output directory; replaces [output] dir.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Publish every date, closed or not (the end of a backfill).
        #[arg(long)]
        all: bool,
        /// The visitor key file the workers use.
        #[arg(long, value_name = "FILE", env = "LOGCENSUS_VISITOR_KEY_FILE")]
        visitor_key_file: Option<PathBuf>,
    },
    /// Makes the address index of a GeoIP database: its answers for every IPv4 /24 and IPv6
    /// /32, and every record's place, which a run given it (`--geoip-index`, [geoip] index)
    /// looks addresses up in instead of walking the database. Make it again after each
    /// database update: a run leaves out, with a warning, an index made from another database
    /// or with other [geoip.fields].
    GeoipIndex {
        /// The pipeline file (its [geoip.fields], and [geoip] database and index).
        #[arg(long)]
        pipeline: PathBuf,
        /// GeoIP database (.mmdb); replaces [geoip] database.
        #[arg(long, value_name = "MMDB")]
        geoip: Option<PathBuf>,
        /// Where to write the index; replaces [geoip] index.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Shows a Parquet file's schema, metadata and first rows.
    Inspect {
        /// The Parquet file.
        file: PathBuf,
        /// How many rows to show.
        #[arg(long, default_value_t = 10)]
        rows: usize,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The pipeline file.
    #[arg(long)]
    pipeline: PathBuf,
    /// Input files, globs, or `-` for stdin (repeatable); replaces [source] inputs.
    #[arg(long = "input", value_name = "PATH")]
    inputs: Vec<String>,
    /// Output directory; replaces [output] dir.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// GeoIP database (.mmdb); replaces [geoip] database.
    #[arg(long, value_name = "MMDB")]
    geoip: Option<PathBuf>,
    /// The database's address index, made by `logcensus geoip-index`; replaces [geoip] index.
    #[arg(long, value_name = "FILE")]
    geoip_index: Option<PathBuf>,
    /// File holding the secret visitor keys are derived from (never put it in a pipeline file).
    #[arg(long, value_name = "FILE", env = "LOGCENSUS_VISITOR_KEY_FILE")]
    visitor_key_file: Option<PathBuf>,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Let the scheduler move a batch run's workers between cores. By default each worker is
    /// bound to a core of its own, when there are at least two and enough cores for them.
    #[arg(long)]
    no_pin: bool,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Kafka brokers (`host:port[,...]`): stream from Kafka; replaces [source.kafka] brokers.
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// Kafka topic; replaces [source.kafka] topic.
    #[arg(long)]
    topic: Option<String>,
    /// Consumer group; replaces [source.kafka] group.
    #[arg(long)]
    group: Option<String>,
    /// This worker's name in the group's state (default: host name and process id).
    #[arg(long, value_name = "NAME")]
    worker_id: Option<String>,
    /// Streaming: checkpoint, commit and exit 0 after no record came for this long (e.g. `10s`)
    /// and the state covers every record in the topic (waiting up to 60 s for other members).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    exit_when_idle: Option<Duration>,
    /// Streaming: serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Streaming: also publish closed dates after each checkpoint.
    #[arg(long)]
    publish: bool,
    /// Replace files of dates an earlier run released with differential privacy (only if that
    /// release never left this machine: two noisy releases of one date can be averaged).
    #[arg(long)]
    rerelease: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `Targets` rather than `EnvFilter`: the same `target=level` directives without span and
    // field filters, and without the regex engine's full-DFA builder, which EnvFilter's
    // dependencies switch on for every regex in the process (woothee's User-Agent patterns
    // then took about 10 ms to compile, on the first line of every run).
    let filter = cli.log.parse::<Targets>().unwrap_or_else(|e| {
        eprintln!(
            "logcensus: --log / LOGCENSUS_LOG `{}` is not a level or `target=level` list ({e}); logging at info",
            cli.log
        );
        Targets::new().with_default(tracing::Level::INFO)
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .init();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Validate { pipeline } => validate(&pipeline),
        Command::Audit {
            dir,
            pipeline,
            min_visitors,
        } => match audit(&dir, &pipeline, min_visitors) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Publish {
            pipeline,
            out,
            all,
            visitor_key_file,
        } => publish(&pipeline, out, all, visitor_key_file.as_deref()),
        Command::GeoipIndex {
            pipeline,
            geoip,
            out,
        } => geoip_index(&pipeline, geoip, out),
        Command::Inspect { file, rows } => logcensus_sink::inspect(&file, rows)
            .map(|i| print!("{i}"))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error message already names its cause; the chain would repeat it.
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints the audit report; true when the release is clean.
fn audit(
    dir: &std::path::Path,
    pipeline: &std::path::Path,
    min_visitors: Option<u64>,
) -> Result<bool> {
    let pipeline = Pipeline::load(pipeline)?;
    let report = logcensus_audit::audit(dir, &pipeline, min_visitors)?;
    println!("{report}");
    Ok(report.is_clean())
}

fn geoip_index(path: &std::path::Path, geoip: Option<PathBuf>, out: Option<PathBuf>) -> Result<()> {
    let pipeline = Pipeline::load(path)?;
    let Some(geoip) = geoip.or_else(|| pipeline.geoip.clone()) else {
        anyhow::bail!(
            "no GeoIP database: set [geoip] database in {} or pass --geoip FILE.mmdb",
            path.display()
        );
    };
    let Some(out) = out.or_else(|| pipeline.geoip_index.clone()) else {
        anyhow::bail!(
            "nowhere to write the index: set [geoip] index in {} or pass --out FILE",
            path.display()
        );
    };
    let started = std::time::Instant::now();
    let bytes = logcensus_pipeline::make_geoip_index(&pipeline, &geoip, &out)?;
    println!(
        "wrote the address index of {} to {} ({bytes} bytes, {:.2}s)",
        geoip.display(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn validate(path: &std::path::Path) -> Result<()> {
    let p = Pipeline::load(path)?;
    println!(
        "{}: ok — pipeline `{}` under policy `{}` ({}), {} tables per {}",
        path.display(),
        p.name,
        p.policy.id,
        &p.policy_hash[..16],
        p.tables.len(),
        p.period.name()
    );
    // The release each table gets, as its files will record it (DP calibrated here).
    for (table, how) in logcensus_pipeline::release_plan(&p)? {
        let meta = how.metadata();
        if meta.is_empty() {
            continue;
        }
        let shown: Vec<String> = meta
            .iter()
            .map(|(k, v)| format!("{}={v}", k.trim_start_matches("logcensus.release.")))
            .collect();
        println!("  {}: {}", table.name(), shown.join(" "));
    }
    // An address index that no longer fits its database (one updated since) is only slower at
    // run time, so it is said here, not refused.
    if let (Some(geoip), Some(index)) = (&p.geoip, &p.geoip_index) {
        match logcensus_pipeline::check_geoip_index(&p, geoip, index) {
            Ok(()) => println!(
                "  geoip index: {} fits {}",
                index.display(),
                geoip.display()
            ),
            Err(e) => println!("  geoip index: not used by runs: {e}"),
        }
    }
    Ok(())
}

fn publish(
    pipeline: &std::path::Path,
    out: Option<PathBuf>,
    all: bool,
    key: Option<&std::path::Path>,
) -> Result<()> {
    let pipeline = Pipeline::load(pipeline)?;
    let out = out
        .or_else(|| pipeline.out.clone())
        .unwrap_or_else(|| PathBuf::from("out"));
    let Some(key) = key else {
        anyhow::bail!("publish needs the workers' visitor key: pass --visitor-key-file FILE (or set LOGCENSUS_VISITOR_KEY_FILE)");
    };
    let summary = logcensus_pipeline::publish(&logcensus_pipeline::PublishOptions {
        pipeline,
        out,
        secret: VisitorSecret::from_file(key)?,
        all,
        metrics: None,
    })?;
    let day = |d: &i64| logcensus_pipeline::date_name(*d);
    if summary.dates.is_empty() {
        println!("nothing to publish");
    } else {
        println!(
            "published {}: {} files",
            summary.dates.iter().map(day).collect::<Vec<_>>().join(", "),
            summary.files.len()
        );
    }
    if !summary.open_dates.is_empty() {
        println!(
            "still open: {}",
            summary
                .open_dates
                .iter()
                .map(day)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Streams from Kafka until stopped (SIGTERM, SIGINT) or idle.
fn stream(args: &RunArgs, pipeline: Pipeline) -> Result<()> {
    let Some(mut kafka) = pipeline.kafka.clone().or_else(|| {
        args.brokers
            .as_ref()
            .map(|b| logcensus_policy::KafkaSource {
                brokers: b.clone(),
                topic: String::new(),
                group: String::new(),
                allowed_lateness: Duration::from_secs(3600),
                checkpoint_interval: Duration::from_secs(30),
            })
    }) else {
        anyhow::bail!("no input: set [source] inputs or [source.kafka] in {}, or pass --input PATH or --brokers HOST:PORT --topic T --group G", pipeline.path.display());
    };
    if let Some(b) = &args.brokers {
        kafka.brokers = b.clone();
    }
    if let Some(t) = &args.topic {
        kafka.topic = t.clone();
    }
    if let Some(g) = &args.group {
        kafka.group = g.clone();
    }
    if kafka.topic.is_empty() || kafka.group.is_empty() {
        anyhow::bail!("streaming needs a topic and a group: pass --topic T --group G or set them in [source.kafka]");
    }
    let Some(key) = &args.visitor_key_file else {
        return Err(logcensus_pipeline::RunError::StreamNeedsKey.into());
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal while the first is being handled exits at once (status 1).
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let metrics = Arc::new(logcensus_pipeline::Metrics::default());
    if let Some(addr) = args.metrics_addr {
        let bound = metrics.serve(addr)?;
        tracing::info!(%bound, "metrics served on http://{bound}/metrics");
    }
    let worker_id = args.worker_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    let opts = logcensus_pipeline::StreamOptions {
        geoip: args.geoip.clone().or_else(|| pipeline.geoip.clone()),
        geoip_index: args
            .geoip_index
            .clone()
            .or_else(|| pipeline.geoip_index.clone()),
        out: args
            .out
            .clone()
            .or_else(|| pipeline.out.clone())
            .unwrap_or_else(|| PathBuf::from("out")),
        pipeline,
        kafka,
        secret: VisitorSecret::from_file(key)?,
        worker_id,
        exit_when_idle: args.exit_when_idle,
        stop,
        metrics,
        publish: args.publish,
    };
    let s = logcensus_pipeline::run_stream(&opts)?;
    println!(
        "streamed {} records: {} requests counted, {} rejected, {} late, {} already counted before a restart, {} dropped for another worker to count; {} checkpoints",
        s.records, s.parsed, s.rejected, s.late, s.already_counted, s.dropped, s.checkpoints
    );
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    let pipeline = Pipeline::load(&args.pipeline)?;
    let streaming = args.inputs.is_empty()
        && (args.brokers.is_some() || (pipeline.inputs.is_empty() && pipeline.kafka.is_some()));
    if streaming {
        return stream(&args, pipeline);
    }
    let patterns = if args.inputs.is_empty() {
        pipeline.inputs.clone()
    } else {
        args.inputs.clone()
    };
    let inputs = expand_inputs(&patterns)?;
    let out = args
        .out
        .clone()
        .or_else(|| pipeline.out.clone())
        .unwrap_or_else(|| PathBuf::from("out"));
    let secret = match &args.visitor_key_file {
        Some(path) => VisitorSecret::from_file(path)?,
        None => {
            tracing::warn!(
                "no --visitor-key-file (or LOGCENSUS_VISITOR_KEY_FILE): using a random visitor key for this run; visitor counts will not merge with other runs"
            );
            VisitorSecret::random()
        }
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let opts = RunOptions {
        geoip: args.geoip.clone().or_else(|| pipeline.geoip.clone()),
        geoip_index: args
            .geoip_index
            .clone()
            .or_else(|| pipeline.geoip_index.clone()),
        pipeline,
        inputs,
        out,
        secret,
        threads,
        pin_workers: !args.no_pin,
        rerelease: args.rerelease,
    };
    tracing::info!(
        pipeline = %opts.pipeline.name,
        inputs = opts.inputs.len(),
        out = %opts.out.display(),
        threads,
        "run started"
    );
    let counter = ByteCounter::default();
    let show_bar = !args.no_progress
        && std::io::stderr().is_terminal()
        && opts.inputs.iter().all(|i| matches!(i, Input::File(_)));
    let bar = show_bar.then(|| progress_bar(&opts.inputs, &counter));
    let result = logcensus_pipeline::run(&opts, &counter);
    if let Some((stop, handle)) = bar {
        stop.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }
    let summary = result?;
    print_summary(&summary);
    let mut replaced: Vec<&str> = summary
        .files
        .iter()
        .filter(|f| f.replaced_different)
        .map(|f| f.partition.as_str())
        .collect();
    replaced.sort_unstable();
    replaced.dedup();
    if !replaced.is_empty() {
        tracing::warn!(
            dates = %replaced.join(", "),
            out = %opts.out.display(),
            "replaced tables of these dates that an earlier run had written from other input; a date's tables are built from one run's input only, so pass every file holding a date (rotated logs carry lines of the day before) to the same run"
        );
    }
    if summary.parsed == 0 && summary.lines_read > 0 {
        tracing::warn!(
            pipeline = %opts.pipeline.path.display(),
            "no line could be parsed: check that [source] format matches the log (see the rejection reasons above)"
        );
    }
    Ok(())
}

fn progress_bar(
    inputs: &[Input],
    counter: &ByteCounter,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let total: u64 = inputs.iter().map(input_len).sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("valid template"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, counter) = (stop.clone(), counter.clone());
    let handle = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            bar.set_position(counter.get());
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    });
    (stop, handle)
}

fn print_summary(s: &Summary) {
    println!(
        "read {} lines in {:.2}s ({:.0} lines/s): {} requests counted, {} rejected",
        s.lines_read,
        s.elapsed.as_secs_f64(),
        s.lines_per_second(),
        s.parsed,
        s.rejected_total()
    );
    for (reason, n) in s.rejected.iter().filter(|(_, n)| *n > 0) {
        println!("  rejected {reason}: {n}");
    }
    for f in &s.input_failures {
        if f.ended {
            println!(
                "  input {} ended early after line {}: {}",
                f.input, f.after_line, f.error
            );
        } else {
            println!(
                "  input {} could not be read after line {} (up to {} KiB of it counted as truncated_input; the rest was read): {}",
                f.input,
                f.after_line,
                logcensus_source::PIECE_BYTES / 1024,
                f.error
            );
        }
    }
    for (table, rows) in &s.rows {
        let files = s.files.iter().filter(|f| f.table == *table).count();
        println!("  {table}: {rows} rows in {files} files");
    }
}
