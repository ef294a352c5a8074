//! One criterion group per stage of a log line's path, each over the same generated log: 100,000
//! `combined` lines, 500 distinct User-Agents, 50,000 visitors, addresses from the whole public
//! address space. Every group reports `Throughput::Elements(lines)`, so criterion prints lines/s
//! and the time per iteration divided by the line count is the cost per line.
//!
//! The inputs of each stage are computed once, outside the timed loop, by the stages before it,
//! so a group times its own stage only. `line_worker` times the whole per-line path.
//!
//! `LOGCENSUS_BENCH_MMDB=/path/GeoLite2-City.mmdb` replaces the committed test database with a
//! real one (never commit it); the benchmark ids that depend on the database then say so.
//!
//! Under `cargo test --benches` criterion runs each benchmark once, as a test; the log is then
//! 2,000 lines, so that a debug build finishes in well under a second.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use logcensus_aggregate::{Aggregates, Observation, Origin, TableOut, VisitorKeys, VisitorSecret};
use logcensus_enrich::{ClientClass, GeoDb, Place, ReferrerClassifier, UaClassifier};
use logcensus_fixtures::logs::{AddressSpace, LogFormat, LogOptions};
use logcensus_parse::{FormatSpec, LineParser};
use logcensus_pipeline::LineWorker;
use logcensus_policy::rules::{address_bytes, classify_referrer, client_address, parse_ip};
use logcensus_policy::Pipeline;
use logcensus_sink::RunMetadata;
use logcensus_source::{Batch, Entry};

/// Lines in the benchmark log, and in the log of a test-mode run.
const BENCH_LINES: u64 = 100_000;
const TEST_LINES: u64 = 2_000;

const SECRET: [u8; 32] = [7; 32];

/// The fields of one parsed line that later stages take, owned.
struct Fields {
    time: i64,
    remote_host: Option<Vec<u8>>,
    address: Option<IpAddr>,
    user_agent: Option<String>,
    referer: Option<Vec<u8>>,
    status: Option<u16>,
    bytes: u64,
}

/// What [`Aggregates::observe`] is fed for one line, as the worker would have computed it.
struct Observed {
    time: i64,
    visitor: u64,
    place: Arc<Place>,
    geo_known: bool,
    client: Arc<ClientClass>,
    referrer: Arc<str>,
    status: Option<u16>,
    bytes: u64,
}

/// Everything the groups share, made once per benchmark binary.
struct Data {
    lines: Vec<&'static [u8]>,
    fields: Vec<Fields>,
    observed: Vec<Observed>,
    pipeline: Pipeline,
    geo: GeoDb,
    /// The same database with its address index (`logcensus geoip-index`), made at start.
    geo_indexed: GeoDb,
    /// `test-city`, or `LOGCENSUS_BENCH_MMDB=<file name>` for a database from the environment.
    geo_label: String,
    /// The finished tables of the whole log, for the Parquet writer.
    tables: Vec<TableOut>,
    meta: RunMetadata,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the workspace")
        .to_path_buf()
}

/// Criterion's own rule: `cargo bench` passes `--bench`; without it each benchmark runs once.
fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let opts = LogOptions {
            lines: if test_mode() { TEST_LINES } else { BENCH_LINES },
            seed: 42,
            format: LogFormat::Combined,
            user_agents: Some(500),
            addresses: AddressSpace::Internet,
            visitors: 50_000,
            malformed: 0.0,
            ..LogOptions::default()
        };
        let log: &'static [u8] = Box::leak(
            logcensus_fixtures::generate(&opts)
                .expect("benchmark log options are valid")
                .into_boxed_slice(),
        );
        let lines: Vec<&'static [u8]> = log
            .strip_suffix(b"\n")
            .unwrap_or(log)
            .split(|&b| b == b'\n')
            .collect();
        assert_eq!(lines.len() as u64, opts.lines);

        let root = workspace_root();
        let pipeline = Pipeline::load(&root.join("pipelines/internal-daily.toml"))
            .expect("pipelines/internal-daily.toml loads");
        let (mmdb, geo_label) = match std::env::var_os("LOGCENSUS_BENCH_MMDB") {
            Some(p) if !p.is_empty() => {
                let p = PathBuf::from(p);
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                let label = format!("LOGCENSUS_BENCH_MMDB={name}");
                (p, label)
            }
            _ => (
                root.join("fixtures/geoip/logcensus-test-city.mmdb"),
                "test-city".to_string(),
            ),
        };
        let geo = GeoDb::open(&mmdb, &pipeline.geo_fields, pipeline.geo_level)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut geo_indexed = GeoDb::open(&mmdb, &pipeline.geo_fields, pipeline.geo_level)
            .unwrap_or_else(|e| panic!("{e}"));
        {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let index = dir.path().join("geoip.idx");
            let bytes =
                GeoDb::make_index(&mmdb, &pipeline.geo_fields).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&index, bytes).expect("the index is written");
            geo_indexed
                .use_index(&index)
                .unwrap_or_else(|e| panic!("{e}"));
            geo_indexed.index_intact().unwrap_or_else(|e| panic!("{e}"));
        }

        let parser = LineParser::new(&FormatSpec::Combined).expect("combined compiles");
        let fields: Vec<Fields> = lines
            .iter()
            .map(|line| {
                let r = parser
                    .parse(line)
                    .expect("the benchmark log has no bad lines");
                let remote_host = r.remote_host.map(|h| h.into_owned());
                Fields {
                    time: r.time.expect("combined lines have a time"),
                    address: remote_host.as_deref().and_then(parse_ip),
                    remote_host,
                    user_agent: r
                        .user_agent
                        .map(|u| String::from_utf8(u.into_owned()).expect("UTF-8 log")),
                    referer: r.referer.map(|r| r.into_owned()),
                    status: r.status,
                    bytes: r.bytes.unwrap_or(0),
                }
            })
            .collect();

        let mut ua = UaClassifier::new(pipeline.policy.user_agent.major_versions);
        let mut places = geo.lookup();
        let mut keys = VisitorKeys::new(VisitorSecret::from_bytes(SECRET));
        let mut referrers = ReferrerClassifier::new(&pipeline.own_domains);
        let observed = fields
            .iter()
            .map(|f| {
                let ua_bytes = f.user_agent.as_deref().unwrap_or("").as_bytes();
                let (place, geo_known) = places.place(f.address);
                Observed {
                    time: f.time,
                    visitor: keys.visitor(f.time, &key_address(f.address), ua_bytes),
                    place: place.clone(),
                    geo_known,
                    client: ua.classify(f.user_agent.as_deref()),
                    referrer: referrers.classify(f.referer.as_deref()).clone(),
                    status: f.status,
                    bytes: f.bytes,
                }
            })
            .collect();

        let mut worker = LineWorker::new(&pipeline, Some(&geo), VisitorSecret::from_bytes(SECRET));
        for line in &lines {
            worker.line(line).expect("every benchmark line is counted");
        }
        let tables = worker.into_aggregates().finish(&pipeline.tables);
        let rows: Vec<String> = tables
            .iter()
            .map(|t| format!("{} {}", t.name, t.num_rows()))
            .collect();
        eprintln!(
            "benchmark log: {} lines, {} bytes; GeoIP {}; table rows: {}",
            lines.len(),
            log.len(),
            geo.description,
            rows.join(", ")
        );
        let meta = RunMetadata {
            pipeline: pipeline.name.clone(),
            policy_id: pipeline.policy.id.clone(),
            policy_hash: pipeline.policy_hash.clone(),
            period: pipeline.period.name().to_string(),
            geo_level: pipeline.geo_level.name().to_string(),
            extra: Vec::new(),
            table_extra: Vec::new(),
        };
        Data {
            lines,
            fields,
            observed,
            pipeline,
            geo,
            geo_indexed,
            geo_label,
            tables,
            meta,
        }
    })
}

/// The worker hashes a missing address as sixteen zero bytes.
fn key_address(ip: Option<IpAddr>) -> [u8; 16] {
    ip.map_or([0; 16], address_bytes)
}

fn lines(d: &Data) -> Throughput {
    Throughput::Elements(d.lines.len() as u64)
}

/// Every iteration is a whole log (tens of milliseconds), so criterion's default of 100 samples
/// in rising iteration counts would take minutes; ten equal samples are plenty for a stage.
fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.throughput(lines(data()));
    g
}

fn parse(c: &mut Criterion) {
    let d = data();
    let parser = LineParser::new(&FormatSpec::Combined).expect("combined compiles");
    let mut g = group(c, "parse");
    g.bench_function("combined", |b| {
        b.iter(|| {
            for line in &d.lines {
                let _ = black_box(parser.parse(black_box(line)));
            }
        })
    });
    g.finish();
}

/// The coarsening rules of the per-line path that are not a stage of their own: choosing and
/// parsing the client address, and turning the referrer into a registrable domain.
fn policy(c: &mut Criterion) {
    let d = data();
    let mut g = group(c, "policy");
    let source = d.pipeline.client_address;
    g.bench_function("client_address", |b| {
        b.iter(|| {
            for f in &d.fields {
                black_box(client_address(source, f.remote_host.as_deref(), None));
            }
        })
    });
    let mut scratch = String::new();
    g.bench_function("classify_referrer", |b| {
        b.iter(|| {
            for f in &d.fields {
                let r =
                    classify_referrer(f.referer.as_deref(), &d.pipeline.own_domains, &mut scratch);
                black_box(r.as_str());
            }
        })
    });
    // What a worker does: the rule, with each host's class cached (warm after one pass).
    let mut cached = ReferrerClassifier::new(&d.pipeline.own_domains);
    g.bench_function("referrer_cached", |b| {
        b.iter(|| {
            for f in &d.fields {
                black_box(cached.classify(f.referer.as_deref()));
            }
        })
    });
    g.finish();
}

fn user_agent(c: &mut Criterion) {
    let d = data();
    let versions = d.pipeline.policy.user_agent.major_versions;
    let mut g = group(c, "user_agent");
    // A worker's cache after its first few thousand lines: every lookup is a hit.
    let mut warm = UaClassifier::new(versions);
    for f in &d.fields {
        warm.classify(f.user_agent.as_deref());
    }
    g.bench_function("classify_warm", |b| {
        b.iter(|| {
            for f in &d.fields {
                black_box(warm.classify(black_box(f.user_agent.as_deref())));
            }
        })
    });
    // A new worker: each distinct User-Agent goes through woothee once, the rest are hits.
    g.bench_function("classify_cold", |b| {
        b.iter_batched(
            || UaClassifier::new(versions),
            |mut ua| {
                for f in &d.fields {
                    black_box(ua.classify(black_box(f.user_agent.as_deref())));
                }
                ua
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn geo(c: &mut Criterion) {
    let d = data();
    let mut g = group(c, "geo");
    let mut warm = d.geo.lookup();
    for f in &d.fields {
        warm.place(f.address);
    }
    g.bench_function(format!("place_warm/{}", d.geo_label), |b| {
        b.iter(|| {
            for f in &d.fields {
                black_box(warm.place(black_box(f.address)));
            }
        })
    });
    // From cold caches, with the database alone and through its address index.
    for (name, geo) in [
        ("place_cold", &d.geo),
        ("place_cold_indexed", &d.geo_indexed),
    ] {
        g.bench_function(format!("{name}/{}", d.geo_label), |b| {
            b.iter_batched(
                || {
                    // The address and record caches are the database's, shared by every
                    // handle: empty them too.
                    geo.forget_lookups();
                    geo.lookup()
                },
                |mut places| {
                    for f in &d.fields {
                        black_box(places.place(black_box(f.address)));
                    }
                    places
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn visitor_hash(c: &mut Criterion) {
    let d = data();
    let inputs: Vec<(i64, [u8; 16], &[u8])> = d
        .fields
        .iter()
        .map(|f| {
            let ua = f.user_agent.as_deref().unwrap_or("").as_bytes();
            (f.time, key_address(f.address), ua)
        })
        .collect();
    let mut keys = VisitorKeys::new(VisitorSecret::from_bytes(SECRET));
    let mut g = group(c, "visitor_hash");
    g.bench_function("siphash13", |b| {
        b.iter(|| {
            for (time, address, ua) in &inputs {
                black_box(keys.visitor(*time, address, ua));
            }
        })
    });
    // What a worker does per line: the User-Agent's digest is kept in its cache.
    let digested: Vec<(i64, [u8; 16], u64)> = inputs
        .iter()
        .map(|(time, address, ua)| (*time, *address, keys.key(*time).user_agent(ua)))
        .collect();
    g.bench_function("digest_kept", |b| {
        b.iter(|| {
            for (time, address, digest) in &digested {
                black_box(keys.key(*time).visitor_of(address, *digest));
            }
        })
    });
    g.finish();
}

fn aggregate(c: &mut Criterion) {
    let d = data();
    let p = &d.pipeline;
    let observe_all = |mut agg: Aggregates| {
        for o in &d.observed {
            agg.observe(black_box(&Observation {
                time: o.time,
                visitor: o.visitor,
                origin: Origin::Place(&o.place, o.geo_known),
                client: &o.client,
                referrer: &o.referrer,
                status: o.status,
                bytes: o.bytes,
            }));
        }
        agg
    };
    let mut g = group(c, "aggregate");
    // The places observed depend on the database, so the ids name it.
    // Empty state each time, as a new worker starts: includes growing the visitor sets.
    g.bench_function(format!("observe/{}", d.geo_label), |b| {
        b.iter_batched(
            || Aggregates::new(p.period, p.crawlers),
            observe_all,
            BatchSize::PerIteration,
        )
    });
    let full = observe_all(Aggregates::new(p.period, p.crawlers));
    g.bench_function(format!("finish/{}", d.geo_label), |b| {
        b.iter_batched(
            || full.clone(),
            |agg| agg.finish(&p.tables),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn line_worker(c: &mut Criterion) {
    let d = data();
    let secret = || VisitorSecret::from_bytes(SECRET);
    let mut g = group(c, "line_worker");
    // Steady state of a long run: caches warm, every visitor already in its set.
    let mut warm = LineWorker::new(&d.pipeline, Some(&d.geo), secret());
    for line in &d.lines {
        let _ = warm.line(line);
    }
    g.bench_function(format!("warm/{}", d.geo_label), |b| {
        b.iter(|| {
            for line in &d.lines {
                let _ = black_box(warm.line(black_box(line)));
            }
        })
    });
    // A new worker over the whole log: cold caches and growing aggregates included.
    g.bench_function(format!("fresh/{}", d.geo_label), |b| {
        b.iter_batched(
            || {
                d.geo.forget_lookups();
                LineWorker::new(&d.pipeline, Some(&d.geo), secret())
            },
            |mut w| {
                for line in &d.lines {
                    let _ = black_box(w.line(black_box(line)));
                }
                w
            },
            BatchSize::PerIteration,
        )
    });
    // The same in batches of about 256 KiB, as the reader hands them over (so each batch's
    // addresses are looked up together first), and the worker's end (its visitor records
    // turned into cells): a run's work per line, reading and the merge apart.
    let batches = batches_of(&d.lines);
    g.bench_function(format!("batches_fresh/{}", d.geo_label), |b| {
        b.iter_batched(
            || {
                d.geo.forget_lookups();
                LineWorker::new(&d.pipeline, Some(&d.geo), secret())
            },
            |mut w| {
                for batch in &batches {
                    w.batch("bench", black_box(batch));
                }
                w.into_aggregates()
            },
            BatchSize::PerIteration,
        )
    });
    // The same with the database's address index.
    g.bench_function(format!("batches_fresh_indexed/{}", d.geo_label), |b| {
        b.iter_batched(
            || {
                d.geo_indexed.forget_lookups();
                LineWorker::new(&d.pipeline, Some(&d.geo_indexed), secret())
            },
            |mut w| {
                for batch in &batches {
                    w.batch("bench", black_box(batch));
                }
                w.into_aggregates()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// `lines` in batches of about 256 KiB each.
fn batches_of(lines: &[&[u8]]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut batch = Batch::default();
    for line in lines {
        let start = batch.data.len() as u32;
        batch.data.extend_from_slice(line);
        let end = batch.data.len() as u32;
        batch.data.push(b'\n');
        batch.entries.push(Entry::Line { start, end });
        if batch.data.len() >= 256 * 1024 {
            out.push(std::mem::take(&mut batch));
        }
    }
    if !batch.entries.is_empty() {
        out.push(batch);
    }
    out
}

fn parquet(c: &mut Criterion) {
    let d = data();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut g = group(c, "parquet");
    // Rewrites the same files each time, as a rerun of a job does (write, fsync, rename).
    g.bench_function(format!("write_tables/{}", d.geo_label), |b| {
        b.iter(|| {
            logcensus_sink::write_tables(dir.path(), &d.tables, &d.meta)
                .expect("the tables are written")
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = stages;
    config = config();
    targets = parse, policy, user_agent, geo, visitor_hash, aggregate, line_worker, parquet
}
criterion_main!(stages);
