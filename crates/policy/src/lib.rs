//! What a job may read and how coarse its output must be: the policy file, the pipeline file that
//! runs under it, and the coarsening rules that turn raw fields into shareable values.
//!
//! A policy is a ceiling (e.g. "addresses become at most a region; time at most hourly"); a
//! pipeline chooses what to compute within it. [`Pipeline::load`] reads both, checks the pipeline
//! against the policy, and reports every problem as `file:line:column: key: message`.
//!
//! ```no_run
//! let pipeline = logcensus_policy::Pipeline::load("pipelines/partner-daily.toml".as_ref()).unwrap();
//! assert_eq!(pipeline.name, "partner-daily");
//! println!("policy {} ({})", pipeline.policy.id, pipeline.policy_hash);
//! ```

mod config;
mod error;
pub mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use config::{
    AggregateSection, ClientAddressSource, CrawlerHandling, FormatName, GeoFields, GeoLevel,
    JsonPreset, Mechanism, Period, PipelineFile, PolicyFile, SourceSection, TableName,
};
pub use error::ConfigError;
use logcensus_parse::{FormatSpec, JsonFieldMap, LineParser};

/// A pipeline file, loaded, resolved and checked against its policy.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline file.
    pub path: PathBuf,
    /// `[pipeline] name`.
    pub name: String,
    /// The policy it runs under.
    pub policy: PolicyFile,
    /// Path of the policy file.
    pub policy_path: PathBuf,
    /// BLAKE3 of the policy file's bytes, hex: which exact text the output was made under.
    pub policy_hash: String,
    /// Inputs, resolved relative to the pipeline file (replaced by `--input`).
    pub inputs: Vec<String>,
    /// The compiled-ready log format.
    pub format: FormatSpec,
    /// Lines longer than this are rejected.
    pub max_line_bytes: usize,
    /// Which address identifies the client.
    pub client_address: ClientAddressSource,
    /// GeoIP database path, if any (replaced by `--geoip`).
    pub geoip: Option<PathBuf>,
    /// The database's address index, if any (replaced by `--geoip-index`).
    pub geoip_index: Option<PathBuf>,
    /// Where values sit in the GeoIP records.
    pub geo_fields: GeoFields,
    /// How finely addresses are located.
    pub geo_level: GeoLevel,
    /// Period of every table.
    pub period: Period,
    /// Tables to write, in output order.
    pub tables: Vec<TableName>,
    /// Crawler handling in the demographic tables.
    pub crawlers: CrawlerHandling,
    /// The site's own registrable domains (lowercase).
    pub own_domains: Vec<String>,
    /// Output directory, if set in the file (replaced by `--out`).
    pub out: Option<PathBuf>,
    /// Minimum distinct visitors per released row, per demographic table that has one.
    pub min_visitors: BTreeMap<TableName, u64>,
    /// Contribution bounds for the demographic tables.
    pub bounds: Bounds,
    /// Differential privacy parameters, per demographic table released with DP.
    pub dp: BTreeMap<TableName, DpSpec>,
    /// The Kafka source, when the pipeline streams.
    pub kafka: Option<KafkaSource>,
}

/// `[source.kafka]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSource {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// Seconds after a period's end during which its records still count.
    pub allowed_lateness: std::time::Duration,
    pub checkpoint_interval: std::time::Duration,
}

/// How much one visitor may contribute to a demographic table (per period). `None`: unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    /// A visitor counts in at most this many rows of a table per period.
    pub max_rows_per_visitor: Option<u32>,
    /// At most this many of a visitor's requests count in one row.
    pub max_requests_per_row: Option<u32>,
    /// At most this many of a visitor's bytes count in one row.
    pub max_bytes_per_row: Option<u32>,
}

impl Bounds {
    /// True when some bound is set.
    pub fn any(&self) -> bool {
        *self != Bounds::default()
    }
}

/// Differential privacy parameters of one table (per period).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSpec {
    pub mechanism: Mechanism,
    pub epsilon: f64,
    pub delta: f64,
}

impl Pipeline {
    /// Loads a pipeline file and its policy, and checks one against the other.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
        let (file, text): (PipelineFile, String) = config::load_toml(path)?;
        let invalid = |span: std::ops::Range<usize>, key: &'static str, message: String| {
            let (line, column) = config::line_col(&text, span.start);
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message,
            }
        };

        let policy_path = config::relative_to(path, file.pipeline.policy.get_ref());
        let policy_bytes = std::fs::read(&policy_path).map_err(|e| {
            invalid(
                file.pipeline.policy.span(),
                "pipeline.policy",
                format!(
                    "cannot read the policy file {}: {e}; the path is relative to the pipeline file",
                    policy_path.display()
                ),
            )
        })?;
        let (policy, _): (PolicyFile, String) = config::load_toml(&policy_path)?;
        let policy_hash = blake3::hash(&policy_bytes).to_hex().to_string();

        let source = &file.source;
        let format = match *source.format.get_ref() {
            FormatName::Common => FormatSpec::Common,
            FormatName::Combined => FormatSpec::Combined,
            FormatName::Vcombined => FormatSpec::VCombined,
            FormatName::Apache => match &source.log_format {
                Some(f) => FormatSpec::Apache(f.get_ref().clone()),
                None => {
                    return Err(invalid(
                        source.format.span(),
                        "source.format",
                        "format \"apache\" needs the LogFormat string in `log_format`".into(),
                    ))
                }
            },
            FormatName::Json => {
                let map = match (&source.json, source.json_preset) {
                    (Some(m), None) => m.clone(),
                    (None, Some(JsonPreset::Caddy)) => JsonFieldMap::caddy(),
                    (None, Some(JsonPreset::Traefik)) => JsonFieldMap::traefik(),
                    (None, Some(JsonPreset::Nginx)) => JsonFieldMap::nginx(),
                    (None, None) => {
                        return Err(invalid(
                            source.format.span(),
                            "source.format",
                            "format \"json\" needs a `json_preset` (caddy, traefik, nginx) or a [source.json] field mapping".into(),
                        ))
                    }
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            source.format.span(),
                            "source.json_preset",
                            "give either `json_preset` or [source.json], not both".into(),
                        ))
                    }
                };
                FormatSpec::Json(map)
            }
        };
        if let Some(lf) = &source.log_format {
            if *source.format.get_ref() != FormatName::Apache {
                return Err(invalid(
                    lf.span(),
                    "source.log_format",
                    "`log_format` is only read when format = \"apache\"; set that, or remove `log_format`".into(),
                ));
            }
        }
        if let Err(e) = LineParser::new(&format) {
            let (span, key) = match &source.log_format {
                Some(lf) => (lf.span(), "source.log_format"),
                None => (source.format.span(), "source.format"),
            };
            return Err(invalid(span, key, e.to_string()));
        }
        if source.max_line_bytes < 256 {
            return Err(invalid(
                0..0,
                "source.max_line_bytes",
                "must be at least 256 bytes".into(),
            ));
        }

        let agg = &file.aggregate;
        let period = *agg.period.get_ref();
        if period < policy.time.finest_period {
            return Err(invalid(
                agg.period.span(),
                "aggregate.period",
                format!(
                    "period \"{}\" is finer than policy `{}` allows (finest: \"{}\")",
                    period.name(),
                    policy.id,
                    policy.time.finest_period.name()
                ),
            ));
        }
        let geo_level = *agg.geo_level.get_ref();
        if geo_level > policy.client_address.finest_geo {
            return Err(invalid(
                agg.geo_level.span(),
                "aggregate.geo_level",
                format!(
                    "geo level \"{}\" is finer than policy `{}` allows (finest: \"{}\")",
                    geo_level.name(),
                    policy.id,
                    policy.client_address.finest_geo.name()
                ),
            ));
        }
        let mut tables = agg.tables.get_ref().clone();
        tables.sort();
        tables.dedup();
        if tables.len() != agg.tables.get_ref().len() || tables.is_empty() {
            return Err(invalid(
                agg.tables.span(),
                "aggregate.tables",
                "list each table once, and at least one".into(),
            ));
        }
        for t in &tables {
            let needs = |ok: bool, what: &str| {
                if ok {
                    Ok(())
                } else {
                    Err(invalid(
                        agg.tables.span(),
                        "aggregate.tables",
                        format!(
                            "table `{}` needs {what}, which policy `{}` does not allow",
                            t.name(),
                            policy.id
                        ),
                    ))
                }
            };
            let counts_visitors = policy.client_address.read
                && policy.client_address.count_visitors
                && policy.user_agent.read;
            match t {
                TableName::TrafficByRegion => {
                    needs(policy.client_address.read, "the client address")?;
                    needs(counts_visitors, "visitor counting")?;
                    needs(policy.request.bytes, "the response size")?;
                }
                TableName::Clients => {
                    needs(policy.user_agent.read, "the User-Agent")?;
                    needs(counts_visitors, "visitor counting")?;
                }
                TableName::Referrers => {
                    needs(policy.referrer.read, "the referrer")?;
                    needs(counts_visitors, "visitor counting")?;
                }
                TableName::TrafficQuality => {
                    needs(policy.request.status, "the response status")?;
                    needs(policy.request.bytes, "the response size")?;
                }
            }
        }

        let mut min_visitors = BTreeMap::new();
        if let Some(release) = &file.release {
            let check = |k: &toml::Spanned<u64>, key: &'static str| {
                if *k.get_ref() < 2 {
                    Err(invalid(
                        k.span(),
                        key,
                        "a minimum below 2 visitors protects no one; use 2 or more, or remove it"
                            .into(),
                    ))
                } else {
                    Ok(*k.get_ref())
                }
            };
            if let Some(k) = &release.min_visitors {
                let k = check(k, "release.min_visitors")?;
                for t in &tables {
                    if *t != TableName::TrafficQuality {
                        min_visitors.insert(*t, k);
                    }
                }
            }
            for (t, k) in &release.per_table {
                if *t == TableName::TrafficQuality {
                    return Err(invalid(
                        k.span(),
                        "release.per_table",
                        "traffic_quality has no visitors column; a minimum applies to traffic_by_region, clients and referrers".into(),
                    ));
                }
                min_visitors.insert(*t, check(k, "release.per_table")?);
            }
        }
        let (bounds, dp) = match &file.release {
            Some(release) => release_privacy(release, &tables, &invalid)?,
            None => (Bounds::default(), BTreeMap::new()),
        };
        let kafka = match &source.kafka {
            None => None,
            Some(k) => {
                let duration = |v: &toml::Spanned<String>, key: &'static str| {
                    humantime::parse_duration(v.get_ref()).map_err(|e| {
                        invalid(v.span(), key, format!("`{}` is not a duration ({e}); write e.g. \"30s\", \"10m\" or \"1h\"", v.get_ref()))
                    })
                };
                let checkpoint_interval =
                    duration(&k.checkpoint_interval, "source.kafka.checkpoint_interval")?;
                if checkpoint_interval.is_zero() {
                    return Err(invalid(
                        k.checkpoint_interval.span(),
                        "source.kafka.checkpoint_interval",
                        "must be above zero".into(),
                    ));
                }
                Some(KafkaSource {
                    brokers: k.brokers.clone(),
                    topic: k.topic.clone(),
                    group: k.group.clone(),
                    allowed_lateness: duration(
                        &k.allowed_lateness,
                        "source.kafka.allowed_lateness",
                    )?,
                    checkpoint_interval,
                })
            }
        };
        let geoip = file
            .geoip
            .as_ref()
            .and_then(|g| g.database.as_deref())
            .map(|d| config::relative_to(path, d));
        let geoip_index = file
            .geoip
            .as_ref()
            .and_then(|g| g.index.as_deref())
            .map(|d| config::relative_to(path, d));
        let geo_fields = file.geoip.map(|g| g.fields).unwrap_or_default();
        for (key, path) in [
            ("geoip.fields.continent", &geo_fields.continent),
            ("geoip.fields.country", &geo_fields.country),
            ("geoip.fields.subdivision", &geo_fields.subdivision),
        ] {
            if let Some(why) = finer_than_region(path) {
                let at = text.find(&format!("\"{path}\"")).unwrap_or(0);
                return Err(invalid(
                    at..at,
                    key,
                    format!("\"{path}\" reads {why}, finer than any geographic level logcensus outputs; map it to a continent, country or first-level subdivision field"),
                ));
            }
        }
        Ok(Pipeline {
            path: path.to_path_buf(),
            name: file.pipeline.name,
            policy_path,
            policy_hash,
            inputs: source
                .inputs
                .iter()
                .map(|i| config::relative_to(path, i).display().to_string())
                .collect(),
            format,
            max_line_bytes: source.max_line_bytes,
            client_address: source.client_address,
            geoip,
            geoip_index,
            geo_fields,
            geo_level,
            period,
            tables,
            crawlers: agg.crawlers,
            own_domains: agg
                .own_domains
                .iter()
                .map(|d| {
                    rules::registrable_domain(d)
                        .unwrap_or_else(|| d.trim().trim_end_matches('.').to_ascii_lowercase())
                })
                .collect(),
            out: file
                .output
                .dir
                .as_deref()
                .map(|d| config::relative_to(path, d)),
            min_visitors,
            bounds,
            dp,
            kafka,
            policy,
        })
    }

    /// True when the pipeline writes `table`.
    pub fn has_table(&self, table: TableName) -> bool {
        self.tables.contains(&table)
    }
}

/// Why a GeoIP record path points below a first-level subdivision, if it does.
fn finer_than_region(path: &str) -> Option<&'static str> {
    const FINER: &[(&str, &str)] = &[
        ("city", "a city"),
        ("postal", "a postal code"),
        ("postcode", "a postal code"),
        ("zip", "a postal code"),
        ("location", "a location"),
        ("latitude", "coordinates"),
        ("longitude", "coordinates"),
        ("time_zone", "a time zone"),
        ("timezone", "a time zone"),
        ("metro_code", "a metro area"),
        ("accuracy_radius", "a location"),
        ("traits", "network traits"),
        ("state2", "a second-level subdivision"),
    ];
    let mut segments = path.split('.').peekable();
    while let Some(seg) = segments.next() {
        let lower = seg.to_ascii_lowercase();
        if let Some((_, why)) = FINER.iter().find(|(k, _)| *k == lower) {
            return Some(why);
        }
        if lower == "subdivisions" {
            if let Some(next) = segments.peek() {
                if next.parse::<usize>().is_ok_and(|i| i > 0) {
                    return Some("a second-level subdivision");
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;

/// `[release]` contribution bounds and `[release.dp]`, checked.
fn release_privacy(
    release: &config::ReleaseSection,
    tables: &[TableName],
    invalid: &dyn Fn(std::ops::Range<usize>, &'static str, String) -> ConfigError,
) -> Result<(Bounds, BTreeMap<TableName, DpSpec>), ConfigError> {
    let bound = |v: &Option<toml::Spanned<u64>>, key: &'static str| {
        match v {
        None => Ok(None),
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(invalid(
                v.span(),
                key,
                format!("must be between 1 and {} (a visitor's contribution to a table is capped at it)", u32::MAX),
            )),
        },
    }
    };
    let bounds = Bounds {
        max_rows_per_visitor: bound(
            &release.max_rows_per_visitor,
            "release.max_rows_per_visitor",
        )?,
        max_requests_per_row: bound(
            &release.max_requests_per_row,
            "release.max_requests_per_row",
        )?,
        max_bytes_per_row: bound(&release.max_bytes_per_row, "release.max_bytes_per_row")?,
    };
    let mut dp = BTreeMap::new();
    let Some(section) = &release.dp else {
        return Ok((bounds, dp));
    };
    let demographic: Vec<TableName> = tables
        .iter()
        .copied()
        .filter(|t| *t != TableName::TrafficQuality)
        .collect();
    let chosen = match &section.tables {
        None => demographic.clone(),
        Some(list) => {
            for t in list.get_ref() {
                if *t == TableName::TrafficQuality {
                    return Err(invalid(list.span(), "release.dp.tables", "traffic_quality cannot be released with differential privacy: rejected lines belong to no visitor, so no bound limits what one person adds to it; leave it out of partner releases or out of this list".into()));
                }
                if !demographic.contains(t) {
                    return Err(invalid(
                        list.span(),
                        "release.dp.tables",
                        format!(
                            "{} is not among the tables this pipeline writes ([aggregate] tables)",
                            t.name()
                        ),
                    ));
                }
            }
            list.get_ref().clone()
        }
    };
    if !section.allow_exact_tables {
        if let Some(exact) = tables.iter().find(|t| !chosen.contains(t)) {
            let why = if *exact == TableName::TrafficQuality {
                "traffic_quality holds exact counts and cannot be made differentially private (rejected lines belong to no visitor)"
            } else {
                "it is not in release.dp.tables, so its counts would be exact"
            };
            return Err(invalid(
                section.mechanism.span(),
                "release.dp",
                format!("this pipeline writes {} without differential privacy: {why}. A release with [release.dp] must be private throughout: remove the table from [aggregate] tables (write it from another pipeline), or set `allow_exact_tables = true` in [release.dp] if exact counts of it may go out with the private ones", exact.name()),
            ));
        }
    }
    let epsilon = |v: &toml::Spanned<f64>, key: &'static str| {
        let e = *v.get_ref();
        if e.is_finite() && e > 0.0 && e <= 20.0 {
            Ok(e)
        } else {
            Err(invalid(v.span(), key, "epsilon must be a number above 0 and at most 20 (smaller is more private; 0.1 to 2 per table and period is usual)".into()))
        }
    };
    let delta = |v: &toml::Spanned<f64>, key: &'static str| {
        let d = *v.get_ref();
        if d.is_finite() && d > 0.0 && d <= 1e-3 {
            Ok(d)
        } else {
            Err(invalid(v.span(), key, "delta must be above 0 (partition selection needs it) and at most 0.001; use well under 1 / (visitors per period), e.g. 1e-7".into()))
        }
    };
    let base = DpSpec {
        mechanism: *section.mechanism.get_ref(),
        epsilon: epsilon(&section.epsilon, "release.dp.epsilon")?,
        delta: delta(&section.delta, "release.dp.delta")?,
    };
    for (t, o) in &section.per_table {
        if !chosen.contains(t) {
            let at = o
                .epsilon
                .as_ref()
                .map(|v| v.span())
                .or(o.delta.as_ref().map(|v| v.span()))
                .or(o.mechanism.as_ref().map(|v| v.span()))
                .unwrap_or(section.epsilon.span());
            return Err(invalid(
                at,
                "release.dp.per_table",
                format!(
                    "{} is not released with differential privacy (release.dp.tables)",
                    t.name()
                ),
            ));
        }
    }
    for t in chosen {
        let mut spec = base;
        if let Some(o) = section.per_table.get(&t) {
            if let Some(m) = &o.mechanism {
                spec.mechanism = *m.get_ref();
            }
            if let Some(e) = &o.epsilon {
                spec.epsilon = epsilon(e, "release.dp.per_table")?;
            }
            if let Some(d) = &o.delta {
                spec.delta = delta(d, "release.dp.per_table")?;
            }
        }
        dp.insert(t, spec);
    }
    let needs = |b: Option<u32>, key: &'static str, why: &str| {
        match b {
        Some(_) => Ok(()),
        None => Err(invalid(
            section.mechanism.span(),
            "release.dp",
            format!("differential privacy calibrates its noise to the contribution bounds: set `{key}` in [release] ({why})"),
        )),
    }
    };
    if !dp.is_empty() {
        needs(
            bounds.max_rows_per_visitor,
            "max_rows_per_visitor",
            "how many rows of a table one visitor may count in per period",
        )?;
        needs(
            bounds.max_requests_per_row,
            "max_requests_per_row",
            "how many of one visitor's requests count in a row",
        )?;
    }
    if dp.contains_key(&TableName::TrafficByRegion) {
        needs(
            bounds.max_bytes_per_row,
            "max_bytes_per_row",
            "how many of one visitor's bytes count in a traffic_by_region row",
        )?;
    }
    Ok((bounds, dp))
}
