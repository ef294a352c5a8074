//! Address → place, through a MaxMind DB file, at the pipeline's level.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logcensus_policy::{GeoFields, GeoLevel};
use maxminddb::PathElement;

use crate::{Str, UNKNOWN};

/// Where an address is, no finer than the pipeline's level. `None` means "below the level"
/// (written as null); `(unknown)` means the database had no answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Place {
    pub continent: Option<Str>,
    pub country: Option<Str>,
    pub region: Option<Str>,
}

/// A GeoIP database that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read GeoIP database {}: {source}; check --geoip or [geoip] database", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a usable MaxMind DB (.mmdb) file: {detail}; check --geoip or [geoip] database", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("[geoip.fields] {key} = \"{path}\" is not a valid path: use dotted keys with numbers for array indexes, e.g. \"subdivisions.0.iso_code\"")]
    BadPath { key: &'static str, path: String },
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn parse_path(key: &'static str, path: &str) -> Result<Vec<Seg>, GeoError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    path.split('.')
        .map(|s| {
            if s.is_empty() {
                Err(GeoError::BadPath {
                    key,
                    path: path.to_string(),
                })
            } else if let Ok(i) = s.parse::<usize>() {
                Ok(Seg::Index(i))
            } else {
                Ok(Seg::Key(s.to_string()))
            }
        })
        .collect()
}

/// An open database with its field mapping. Shared by all workers.
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
    continent: Vec<Seg>,
    country: Vec<Seg>,
    subdivision: Vec<Seg>,
    level: GeoLevel,
    /// Human description of the database, for logs (type and build date).
    pub description: String,
}

impl GeoDb {
    /// Opens and checks a database.
    pub fn open(path: &Path, fields: &GeoFields, level: GeoLevel) -> Result<GeoDb, GeoError> {
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| GeoError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let m = reader.metadata();
        let description = format!(
            "{} (built at Unix time {}, {} nodes)",
            m.database_type, m.build_epoch, m.node_count
        );
        Ok(GeoDb {
            continent: parse_path("continent", &fields.continent)?,
            country: parse_path("country", &fields.country)?,
            subdivision: parse_path("subdivision", &fields.subdivision)?,
            reader,
            level,
            description,
        })
    }

    /// A per-worker lookup handle with its own cache.
    pub fn lookup(&self) -> GeoLookup<'_> {
        let unknown: Str = Arc::from(UNKNOWN);
        let unknown_place = Arc::new(Place {
            continent: Some(unknown.clone()),
            country: (self.level >= GeoLevel::Country).then(|| unknown.clone()),
            region: (self.level >= GeoLevel::Region).then(|| unknown.clone()),
        });
        GeoLookup {
            db: self,
            cache: HashMap::new(),
            interned: HashSet::new(),
            unknown_place,
            unknown,
        }
    }
}

/// Cached lookups for one worker.
pub struct GeoLookup<'db> {
    db: &'db GeoDb,
    /// Data-section offset → place: many networks share one record.
    cache: HashMap<usize, (Arc<Place>, bool)>,
    interned: HashSet<Arc<Place>>,
    unknown_place: Arc<Place>,
    unknown: Str,
}

impl GeoLookup<'_> {
    /// The place of an address, and whether the database knew its country (or continent at that
    /// level). A missing address, no record, or an unreadable record is the unknown place.
    pub fn place(&mut self, ip: Option<IpAddr>) -> (Arc<Place>, bool) {
        let Some(ip) = ip else {
            return (self.unknown_place.clone(), false);
        };
        let Ok(result) = self.db.reader.lookup(ip) else {
            return (self.unknown_place.clone(), false);
        };
        let Some(offset) = result.offset() else {
            return (self.unknown_place.clone(), false);
        };
        if let Some((p, known)) = self.cache.get(&offset) {
            return (p.clone(), *known);
        }
        let get = |segs: &[Seg]| -> Option<String> {
            if segs.is_empty() {
                return None;
            }
            let path: Vec<PathElement<'_>> = segs
                .iter()
                .map(|s| match s {
                    Seg::Key(k) => PathElement::Key(k),
                    Seg::Index(i) => PathElement::Index(*i),
                })
                .collect();
            result
                .decode_path::<String>(&path)
                .ok()
                .flatten()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && s != "-")
        };
        let level = self.db.level;
        // Values are checked, not trusted: a country or continent is two letters, a subdivision
        // a short code or name. Anything else (a mapping pointing at the wrong field, a damaged
        // record) is unknown rather than written out.
        let two_letters = |c: String| {
            (c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
                .then(|| c.to_ascii_uppercase())
        };
        let country = get(&self.db.country).and_then(two_letters);
        let continent = get(&self.db.continent).and_then(two_letters).or_else(|| {
            country
                .as_deref()
                .and_then(continent_of)
                .map(str::to_string)
        });
        let region = if level >= GeoLevel::Region {
            match (
                &country,
                get(&self.db.subdivision).filter(|s| plausible_subdivision(s)),
            ) {
                (Some(c), Some(s)) => Some(region_code(c, &s)),
                _ => None,
            }
        } else {
            None
        };
        let known = match level {
            GeoLevel::Continent => continent.is_some(),
            _ => country.is_some(),
        };
        let intern = |v: Option<String>, unknown: &Str| -> Str {
            v.map(Str::from).unwrap_or_else(|| unknown.clone())
        };
        let place = Place {
            continent: Some(intern(continent, &self.unknown)),
            country: (level >= GeoLevel::Country).then(|| intern(country, &self.unknown)),
            region: (level >= GeoLevel::Region).then(|| intern(region, &self.unknown)),
        };
        let place = match self.interned.get(&place) {
            Some(k) => k.clone(),
            None => {
                let k = Arc::new(place);
                self.interned.insert(k.clone());
                k
            }
        };
        if self.cache.len() >= 1_000_000 {
            self.cache.clear();
        }
        self.cache.insert(offset, (place.clone(), known));
        (place, known)
    }
}

/// A subdivision code (`VA`, `13`, `US-VA`) or name (`Virginia`, `São Paulo`): at most 48
/// characters of letters, digits, spaces and `-.'`.
fn plausible_subdivision(s: &str) -> bool {
    s.chars().count() <= 48
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '.' | '\''))
}

/// `US` + `VA` → `US-VA`; a value already prefixed (`US-VA`) is kept; names (`Virginia`, from
/// flat layouts) become `US-Virginia`.
fn region_code(country: &str, sub: &str) -> String {
    let prefixed = sub
        .get(..country.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(country))
        && sub.as_bytes().get(country.len()) == Some(&b'-')
        && sub.len() > country.len() + 1;
    if prefixed {
        format!("{}-{}", country, &sub[country.len() + 1..])
    } else {
        format!("{country}-{sub}")
    }
}

/// Continent of an ISO 3166-1 alpha-2 country, for databases without a continent field.
fn continent_of(country: &str) -> Option<&'static str> {
    const TABLE: &[(&str, &str)] = &[
        ("AS", "AD AE AF AM AZ BD BH BN BT CN CY GE HK ID IL IN IQ IR JO JP KG KH KP KR KW KZ LA LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE"),
        ("EU", "AL AT AX BA BE BG BY CH CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK"),
        ("AF", "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW"),
        ("NA", "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS MX NI PA PM PR SV SX TC TT US VC VG VI"),
        ("SA", "AR BO BR CL CO EC FK GF GY PE PY SR UY VE"),
        ("OC", "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS"),
        ("AN", "AQ BV GS HM TF"),
    ];
    let c = country.to_ascii_uppercase();
    TABLE
        .iter()
        .find_map(|(cont, list)| list.split(' ').any(|x| x == c).then_some(*cont))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_codes() {
        assert_eq!(region_code("US", "VA"), "US-VA");
        assert_eq!(region_code("US", "US-VA"), "US-VA");
        assert_eq!(region_code("US", "Virginia"), "US-Virginia");
        assert_eq!(region_code("GB", "ENG"), "GB-ENG");
        assert_eq!(region_code("BR", "São Paulo"), "BR-São Paulo");
        assert_eq!(region_code("BR", "S"), "BR-S");
        assert!(plausible_subdivision("São Paulo"));
        assert!(plausible_subdivision("13"));
        assert!(!plausible_subdivision("America/New_York"));
        assert!(!plausible_subdivision("someone@example.com"));
        assert!(!plausible_subdivision(&"x".repeat(49)));
    }

    #[test]
    fn continents_from_countries() {
        assert_eq!(continent_of("DE"), Some("EU"));
        assert_eq!(continent_of("jp"), Some("AS"));
        assert_eq!(continent_of("NG"), Some("AF"));
        assert_eq!(continent_of("US"), Some("NA"));
        assert_eq!(continent_of("BR"), Some("SA"));
        assert_eq!(continent_of("AU"), Some("OC"));
        assert_eq!(continent_of("ZZ"), None);
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(matches!(
            parse_path("country", "country..iso_code"),
            Err(GeoError::BadPath { .. })
        ));
    }
}

#[cfg(test)]
mod db_tests {
    use super::*;

    fn open(bytes: Vec<u8>, fields: GeoFields, level: GeoLevel) -> (tempfile::TempDir, GeoDb) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.mmdb");
        std::fs::write(&p, bytes).unwrap();
        let db = GeoDb::open(&p, &fields, level).unwrap();
        (dir, db)
    }

    fn show(p: &Place) -> String {
        let s = |v: &Option<Str>| v.as_deref().unwrap_or("null").to_string();
        format!("{} {} {}", s(&p.continent), s(&p.country), s(&p.region))
    }

    fn lookups(db: &GeoDb) -> Vec<(String, bool)> {
        let mut l = db.lookup();
        let ips = [
            "3.80.0.1",
            "126.1.2.3",
            "86.144.1.1",
            "86.130.0.1",
            "2a01:4f8::1",
            "2804:14c::1",
            "63.140.0.1",
            "::ffff:3.80.0.1",
            "203.0.113.9",
            "10.1.2.3",
        ];
        let mut out: Vec<(String, bool)> = ips
            .iter()
            .map(|ip| {
                let (p, known) = l.place(Some(ip.parse().unwrap()));
                (show(&p), known)
            })
            .collect();
        let (p, known) = l.place(None);
        out.push((show(&p), known));
        out
    }

    fn k(s: &str, known: bool) -> (String, bool) {
        (s.to_string(), known)
    }

    #[test]
    fn geoip2_city_at_each_level() {
        let city = logcensus_fixtures::city_mmdb;
        let (_d, db) = open(city(), GeoFields::default(), GeoLevel::Region);
        assert_eq!(
            lookups(&db),
            [
                k("NA US US-VA", true),
                k("AS JP JP-13", true),
                k("EU GB GB-SCT", true),
                k("EU GB GB-ENG", true),
                k("EU DE DE-BY", true),
                k("SA BR BR-SP", true),
                k("NA US (unknown)", true),
                k("NA US US-VA", true),
                k("(unknown) (unknown) (unknown)", false),
                k("(unknown) (unknown) (unknown)", false),
                k("(unknown) (unknown) (unknown)", false),
            ]
        );
        let (_d, db) = open(city(), GeoFields::default(), GeoLevel::Country);
        let got = lookups(&db);
        assert_eq!(got[0], k("NA US null", true));
        assert_eq!(got[4], k("EU DE null", true));
        assert_eq!(got[8], k("(unknown) (unknown) null", false));
        let (_d, db) = open(city(), GeoFields::default(), GeoLevel::Continent);
        let got = lookups(&db);
        assert_eq!(got[1], k("AS null null", true));
        assert_eq!(got[8], k("(unknown) null null", false));
    }

    #[test]
    fn flat_layout_through_a_field_mapping() {
        let fields = GeoFields {
            continent: String::new(),
            country: "country_code".into(),
            subdivision: "state1".into(),
        };
        let (_d, db) = open(logcensus_fixtures::flat_mmdb(), fields, GeoLevel::Region);
        let got = lookups(&db);
        assert_eq!(got[0], k("NA US US-Virginia", true));
        assert_eq!(got[4], k("EU DE DE-Bavaria", true));
        assert_eq!(got[8], k("(unknown) (unknown) (unknown)", false));
    }

    #[test]
    fn identical_places_share_one_allocation() {
        let (_d, db) = open(
            logcensus_fixtures::city_mmdb(),
            GeoFields::default(),
            GeoLevel::Country,
        );
        let mut l = db.lookup();
        let (a, _) = l.place(Some("86.144.1.1".parse().unwrap()));
        let (b, _) = l.place(Some("86.130.0.1".parse().unwrap()));
        assert!(Arc::ptr_eq(&a, &b), "GB at country level is one place");
    }

    #[test]
    fn missing_and_corrupt_databases_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.mmdb");
        let err = GeoDb::open(&missing, &GeoFields::default(), GeoLevel::Country)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!("cannot read GeoIP database {}", missing.display())),
            "{err}"
        );
        let bad = dir.path().join("bad.mmdb");
        std::fs::write(&bad, b"this is not a database").unwrap();
        let err = GeoDb::open(&bad, &GeoFields::default(), GeoLevel::Country)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{} is not a usable MaxMind DB (.mmdb) file",
                bad.display()
            )),
            "{err}"
        );
        // A truncated real database is refused too, not a crash later.
        let mut cut = logcensus_fixtures::city_mmdb();
        cut.truncate(cut.len() / 2);
        std::fs::write(&bad, cut).unwrap();
        assert!(GeoDb::open(&bad, &GeoFields::default(), GeoLevel::Country).is_err());
    }
}
