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
    JsonPreset, Period, PipelineFile, PolicyFile, SourceSection, TableName,
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
        let geoip = file
            .geoip
            .as_ref()
            .and_then(|g| g.database.as_deref())
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
