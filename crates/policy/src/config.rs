//! The two files a job is described by: the *policy* (what may be read, and how coarse it must
//! become) and the *pipeline* (what this job reads, computes and writes, within the policy).
//!
//! Paths inside a file are relative to that file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;

/// How finely a client address may be located.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeoLevel {
    /// Continent code (`EU`).
    Continent,
    /// ISO 3166-1 alpha-2 country (`DE`).
    Country,
    /// ISO 3166-2 subdivision (`DE-BY`).
    Region,
}

impl GeoLevel {
    /// The name used in files and metadata.
    pub fn name(self) -> &'static str {
        match self {
            GeoLevel::Continent => "continent",
            GeoLevel::Country => "country",
            GeoLevel::Region => "region",
        }
    }
}

/// The length of a table period, always aligned to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Hour,
    Day,
}

impl Period {
    /// The name used in files and metadata.
    pub fn name(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
        }
    }

    /// Length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Period::Hour => 3600,
            Period::Day => 86_400,
        }
    }

    /// Start of the period holding `unix_seconds`.
    pub fn start(self, unix_seconds: i64) -> i64 {
        unix_seconds.div_euclid(self.seconds()) * self.seconds()
    }
}

// ---------------------------------------------------------------------------------------------
// Policy file
// ---------------------------------------------------------------------------------------------

/// A policy: the ceiling on what any pipeline under it may read and how fine its output may be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// A stable identifier, written into every output file (`logcensus.policy_id`).
    pub id: String,
    /// What the policy is and where it comes from.
    #[serde(default)]
    pub description: String,
    /// The client address (`%h`, `X-Forwarded-For`).
    pub client_address: ClientAddressRule,
    /// The `User-Agent` header.
    pub user_agent: UserAgentRule,
    /// The `Referer` header.
    pub referrer: ReferrerRule,
    /// The request time.
    pub time: TimeRule,
    /// Method, status and response size.
    pub request: RequestRule,
}

/// What may be derived from the client address. The address itself is never stored or output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAddressRule {
    /// May the address be read at all (for the lookup and visitor counting)?
    pub read: bool,
    /// The finest geographic level an address may be turned into.
    pub finest_geo: GeoLevel,
    /// May distinct visitors be counted (through a keyed hash of address and User-Agent that is
    /// never written)?
    pub count_visitors: bool,
}

/// What may be derived from the User-Agent. The string itself is never stored or output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAgentRule {
    /// May the header be read at all (for classification)?
    pub read: bool,
    /// May major versions of the browser and operating system be output (never minor ones)?
    pub major_versions: bool,
}

/// What may be derived from the referrer. Paths and query strings are never read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferrerRule {
    /// May the header be read at all (for its domain)?
    pub read: bool,
}

/// How finely time may be output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRule {
    /// The shortest period a table may have.
    pub finest_period: Period,
}

/// Request facts that are not personal on their own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRule {
    /// May the HTTP method be read?
    pub method: bool,
    /// May the response status be read?
    pub status: bool,
    /// May the response size be read?
    pub bytes: bool,
}

// ---------------------------------------------------------------------------------------------
// Pipeline file
// ---------------------------------------------------------------------------------------------

/// A pipeline file as written (before paths are resolved and checked against the policy).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Name and policy.
    pub pipeline: PipelineSection,
    /// Where lines come from and how they are laid out.
    #[serde(default)]
    pub source: SourceSection,
    /// The GeoIP database.
    #[serde(default)]
    pub geoip: Option<GeoipSection>,
    /// What is counted and how.
    pub aggregate: AggregateSection,
    /// Disclosure control applied before tables are written.
    #[serde(default)]
    pub release: Option<ReleaseSection>,
    /// Where tables go.
    #[serde(default)]
    pub output: OutputSection,
}

/// `[release]`: small-cell protection for the demographic tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSection {
    /// Minimum distinct visitors per released row (k) in `traffic_by_region`, `clients` and
    /// `referrers`. Rows under it are rolled up into `(other)` rows or withheld.
    pub min_visitors: Option<Spanned<u64>>,
    /// A different k for some tables, e.g. `{ clients = 20 }`.
    #[serde(default)]
    pub per_table: BTreeMap<TableName, Spanned<u64>>,
    /// Contribution bounding: a visitor counts in at most this many rows per table and period.
    pub max_rows_per_visitor: Option<Spanned<u64>>,
    /// Contribution bounding: at most this many of a visitor's requests count in one row.
    pub max_requests_per_row: Option<Spanned<u64>>,
    /// Contribution bounding: at most this many of a visitor's bytes count in one row
    /// (`traffic_by_region.bytes`).
    pub max_bytes_per_row: Option<Spanned<u64>>,
    /// Differential privacy for some or all demographic tables.
    pub dp: Option<DpSection>,
}

/// `[release.dp]`: noise calibrated to the contribution bounds, and DP partition selection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSection {
    /// `laplace` (pure epsilon per count, delta spent on partition selection) or `gaussian`.
    pub mechanism: Spanned<Mechanism>,
    /// Privacy loss per table and period.
    pub epsilon: Spanned<f64>,
    /// Probability the epsilon guarantee may fail, per table and period.
    pub delta: Spanned<f64>,
    /// Tables released with DP (default: every demographic table the pipeline writes).
    pub tables: Option<Spanned<Vec<TableName>>>,
    /// Different parameters for some tables.
    #[serde(default)]
    pub per_table: BTreeMap<TableName, DpOverride>,
    /// Allow tables without DP (exact counts) in the same release; off by default, since a
    /// pipeline with `[release.dp]` is read as "this release is differentially private".
    #[serde(default)]
    pub allow_exact_tables: bool,
}

/// `[release.dp.per_table.<table>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpOverride {
    pub mechanism: Option<Spanned<Mechanism>>,
    pub epsilon: Option<Spanned<f64>>,
    pub delta: Option<Spanned<f64>>,
}

/// A differential privacy noise mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Discrete Laplace noise; Laplace-threshold partition selection.
    Laplace,
    /// Discrete Gaussian noise; Gaussian-threshold partition selection.
    Gaussian,
}

impl Mechanism {
    /// The name used in pipeline files and metadata.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Laplace => "laplace",
            Mechanism::Gaussian => "gaussian",
        }
    }
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// The pipeline's name, written into every output file (`logcensus.pipeline`).
    pub name: String,
    /// What this pipeline is for.
    #[serde(default)]
    pub description: String,
    /// Path of the policy file this pipeline runs under.
    pub policy: Spanned<String>,
}

/// Log layouts a pipeline can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatName {
    /// Apache/nginx Common Log Format.
    Common,
    /// Combined Log Format (common plus referrer and User-Agent).
    Combined,
    /// `vhost_combined`: `%v:%p` then combined.
    Vcombined,
    /// Any Apache `LogFormat` string, given as `log_format`.
    Apache,
    /// JSON lines, with the mapping in `[source.json]` or a `json_preset`.
    Json,
}

/// Ready-made JSON field mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonPreset {
    Caddy,
    Traefik,
    Nginx,
}

/// Which address identifies the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAddressSource {
    /// The connecting address (`%h`, `%a`).
    #[default]
    RemoteHost,
    /// The left-most valid address of `X-Forwarded-For`, else the connecting address (for
    /// servers behind a proxy or load balancer).
    ForwardedFor,
}

/// `[source]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Files, globs or `-` for stdin; `--input` replaces them.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The log layout.
    #[serde(default = "default_format")]
    pub format: Spanned<FormatName>,
    /// The Apache `LogFormat` string, when `format = "apache"`.
    #[serde(default)]
    pub log_format: Option<Spanned<String>>,
    /// A ready-made JSON mapping, when `format = "json"`.
    #[serde(default)]
    pub json_preset: Option<JsonPreset>,
    /// A JSON field mapping, when `format = "json"` and no preset fits.
    #[serde(default)]
    pub json: Option<logcensus_parse::JsonFieldMap>,
    /// Lines longer than this many bytes are rejected (counted, not read).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Which address identifies the client.
    #[serde(default)]
    pub client_address: ClientAddressSource,
    /// Streaming from Kafka (used when no `--input` is given).
    #[serde(default)]
    pub kafka: Option<KafkaSection>,
}

/// `[source.kafka]`: a topic read by a consumer group; `--brokers`, `--topic` and `--group`
/// replace these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `host:port[,host:port...]`
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// How long after a period ends its records are still counted (e.g. `"10m"`); later ones
    /// are counted as `late_records` only.
    #[serde(default = "default_lateness")]
    pub allowed_lateness: Spanned<String>,
    /// How often a worker checkpoints (e.g. `"30s"`).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: Spanned<String>,
}

fn default_lateness() -> Spanned<String> {
    Spanned::new(0..0, "1h".to_string())
}

fn default_checkpoint_interval() -> Spanned<String> {
    Spanned::new(0..0, "30s".to_string())
}

impl Default for SourceSection {
    fn default() -> Self {
        SourceSection {
            inputs: Vec::new(),
            format: default_format(),
            log_format: None,
            json_preset: None,
            json: None,
            max_line_bytes: default_max_line_bytes(),
            client_address: ClientAddressSource::RemoteHost,
            kafka: None,
        }
    }
}

fn default_format() -> Spanned<FormatName> {
    Spanned::new(0..0, FormatName::Combined)
}

fn default_max_line_bytes() -> usize {
    64 * 1024
}

/// `[geoip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoipSection {
    /// Path of a MaxMind DB (`.mmdb`) file; `--geoip` replaces it.
    #[serde(default)]
    pub database: Option<String>,
    /// Path of the database's address index, made by `logcensus geoip-index` (an IPv4 /24 table
    /// of the same answers, faster to look up); `--geoip-index` replaces it.
    #[serde(default)]
    pub index: Option<String>,
    /// Where the values sit in each record. The defaults read the GeoIP2/GeoLite2 City and
    /// Country schema (also used by DB-IP).
    #[serde(default)]
    pub fields: GeoFields,
}

/// Dotted paths into a database record; a number indexes an array.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoFields {
    /// Continent code, e.g. `continent.code`. Empty when the database has none: the continent
    /// is then derived from the country.
    #[serde(default = "default_continent_path")]
    pub continent: String,
    /// ISO 3166-1 alpha-2 country code, e.g. `country.iso_code`.
    #[serde(default = "default_country_path")]
    pub country: String,
    /// Subdivision code or name, e.g. `subdivisions.0.iso_code` (GeoIP2) or `state1`
    /// (ip-location-db). Values without the `CC-` prefix get it.
    #[serde(default = "default_subdivision_path")]
    pub subdivision: String,
}

impl Default for GeoFields {
    fn default() -> Self {
        GeoFields {
            continent: default_continent_path(),
            country: default_country_path(),
            subdivision: default_subdivision_path(),
        }
    }
}

fn default_continent_path() -> String {
    "continent.code".into()
}
fn default_country_path() -> String {
    "country.iso_code".into()
}
fn default_subdivision_path() -> String {
    "subdivisions.0.iso_code".into()
}

/// What to do with requests from crawlers (User-Agents woothee classifies as `crawler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrawlerHandling {
    /// Left out of the demographic tables (`traffic_by_region`, `clients`, `referrers`);
    /// still counted in `traffic_quality`.
    Exclude,
    /// Counted in every table; in `clients` as device `crawler`.
    Include,
}

/// The tables logcensus can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableName {
    TrafficByRegion,
    Clients,
    Referrers,
    TrafficQuality,
}

impl TableName {
    /// Every table, in output order.
    pub const ALL: [TableName; 4] = [
        TableName::TrafficByRegion,
        TableName::Clients,
        TableName::Referrers,
        TableName::TrafficQuality,
    ];

    /// The table's name on disk and in `schemas/`.
    pub fn name(self) -> &'static str {
        match self {
            TableName::TrafficByRegion => "traffic_by_region",
            TableName::Clients => "clients",
            TableName::Referrers => "referrers",
            TableName::TrafficQuality => "traffic_quality",
        }
    }
}

/// `[aggregate]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSection {
    /// The period of every table.
    pub period: Spanned<Period>,
    /// How finely `traffic_by_region` locates clients.
    #[serde(default = "default_geo_level")]
    pub geo_level: Spanned<GeoLevel>,
    /// The tables to write.
    pub tables: Spanned<Vec<TableName>>,
    /// Crawler requests in the demographic tables.
    pub crawlers: CrawlerHandling,
    /// The site's own registrable domains: referrers from them are `(internal)`.
    #[serde(default)]
    pub own_domains: Vec<String>,
}

fn default_geo_level() -> Spanned<GeoLevel> {
    Spanned::new(0..0, GeoLevel::Country)
}

/// `[output]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Directory of the tables; `--out` replaces it.
    #[serde(default)]
    pub dir: Option<String>,
}

/// Reads and parses a TOML file, turning errors into `file:line:col: message`.
pub(crate) fn load_toml<T: for<'de> Deserialize<'de>>(
    path: &Path,
) -> Result<(T, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value = toml::from_str::<T>(&text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    Ok((value, text))
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Resolves a path written in a file relative to that file's directory.
pub(crate) fn relative_to(file: &Path, written: &str) -> PathBuf {
    let p = Path::new(written);
    if p.is_absolute() || written == "-" {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}
