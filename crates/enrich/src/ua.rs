//! User-Agent → device category, browser and OS family and major version (woothee).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use logcensus_policy::rules::major_version;

use crate::{Str, UNKNOWN};

/// What may be said about a client. Never holds the User-Agent string itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientClass {
    /// woothee category: `pc`, `smartphone`, `mobilephone`, `appliance`, `crawler`, `misc`, or
    /// `(unknown)`.
    pub device: Str,
    /// OS family (`Windows 10`, `Mac OSX`, `Android`, ...).
    pub os: Str,
    /// OS major version, when the policy allows versions and one is known.
    pub os_version: Option<Str>,
    /// Browser or crawler family (`Chrome`, `Googlebot`, ...).
    pub browser: Str,
    /// Browser major version, when the policy allows versions and one is known.
    pub browser_version: Option<Str>,
    /// True for crawlers.
    pub crawler: bool,
    /// True when woothee recognised nothing (neither browser nor OS nor category).
    pub unknown: bool,
    /// True when the header was absent, `-` or empty.
    pub empty: bool,
}

/// Classifies User-Agents with a bounded cache. One per worker thread.
pub struct UaClassifier {
    parser: woothee::parser::Parser,
    /// Keyed by the whole User-Agent, which the log chooses: foldhash, randomly seeded, is fast on
    /// ~150 bytes per line (77 instructions; ahash's portable path took 108). Its resistance to
    /// chosen collisions is minimal by its own account: it holds against a log writer who cannot
    /// see the seed (a batch run gives none), less so against one who can time a long-running
    /// streaming worker. The damage is bounded either way: at most `CACHE_LIMIT` entries, so
    /// colliding keys slow lookups down, they cannot make the memory grow.
    cache: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    /// What the cache knows of each User-Agent, by the index it maps it to.
    known: Vec<Known>,
    interned: HashSet<Arc<ClientClass>, foldhash::fast::RandomState>,
    empty: Arc<ClientClass>,
    versions: bool,
}

/// A User-Agent the cache knows: its class, and a value its caller keeps with it.
struct Known {
    class: Arc<ClientClass>,
    kept: Kept,
}

/// What a caller keeps with a cached User-Agent (see [`UaClassifier::classify_keeping`]):
/// `None` until it sets it.
pub type Kept = Option<(i64, u64)>;

/// Distinct User-Agents kept in the cache before it is cleared (bounds memory on hostile input).
const CACHE_LIMIT: usize = 50_000;

/// Whether a User-Agent is "empty": blank or `-` once trimmed. Nearly every one starts and ends
/// with a visible ASCII character and is longer than one byte, which decides it without
/// trimming (a character that `trim` removes is either one of the ASCII whitespace bytes or
/// starts with a byte of 0x80 or more).
fn is_empty_ua(ua: &str) -> bool {
    let visible = |b: u8| b.is_ascii_graphic();
    match ua.as_bytes() {
        [first, .., last] if visible(*first) && visible(*last) => false,
        _ => matches!(ua.trim(), "" | "-"),
    }
}

/// User-Agents whose classification makes woothee build what most others need.
const WARM_UP: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
];

impl UaClassifier {
    /// Has woothee compile the patterns and build the table that most User-Agents need. It
    /// does so on first use, once per process (about 13M instructions, a few milliseconds),
    /// and every worker that meets a User-Agent meanwhile waits: a run calls this on a thread
    /// of its own as it starts, so that the work overlaps the rest of its start.
    pub fn warm_up() {
        let parser = woothee::parser::Parser::new();
        for ua in WARM_UP {
            std::hint::black_box(parser.parse(ua));
        }
    }

    /// A classifier; `versions` is the policy's `major_versions`.
    pub fn new(versions: bool) -> Self {
        let unknown: Str = Arc::from(UNKNOWN);
        UaClassifier {
            parser: woothee::parser::Parser::new(),
            cache: HashMap::default(),
            known: Vec::new(),
            interned: HashSet::default(),
            empty: Arc::new(ClientClass {
                device: unknown.clone(),
                os: unknown.clone(),
                os_version: None,
                browser: unknown,
                browser_version: None,
                crawler: false,
                unknown: true,
                empty: true,
            }),
            versions,
        }
    }

    /// Classifies one User-Agent (`None`, `-` and empty are "empty").
    pub fn classify(&mut self, ua: Option<&str>) -> Arc<ClientClass> {
        self.classify_keeping(ua).0.clone()
    }

    /// [`UaClassifier::classify`], with a value the caller keeps with this User-Agent while it
    /// is cached (a per-User-Agent digest, say), found with the same lookup. There is none for
    /// an empty User-Agent, which is not cached. The class is lent, not cloned: a worker
    /// counts a request without touching a reference count.
    pub fn classify_keeping(&mut self, ua: Option<&str>) -> (&Arc<ClientClass>, Option<&mut Kept>) {
        let ua = match ua {
            Some(ua) if !is_empty_ua(ua) => ua,
            _ => return (&self.empty, None),
        };
        // Looked up as written (cheaper than trimming first; a User-Agent with surrounding
        // space is rare and only takes a second entry), classified trimmed.
        if let Some(&i) = self.cache.get(ua) {
            let known = &mut self.known[i as usize];
            return (&known.class, Some(&mut known.kept));
        }
        let class = self.compute(ua.trim());
        // Identical classes share one allocation, so aggregation keys compare cheaply.
        let class = match self.interned.get(&class) {
            Some(k) => k.clone(),
            None => {
                let k = Arc::new(class);
                self.interned.insert(k.clone());
                k
            }
        };
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
            self.known.clear();
            self.interned.clear();
        }
        let i = self.known.len();
        self.cache.insert(ua.into(), i as u32);
        self.known.push(Known { class, kept: None });
        let known = &mut self.known[i];
        (&known.class, Some(&mut known.kept))
    }

    fn compute(&self, ua: &str) -> ClientClass {
        let text = |s: &str| -> Str {
            if s.is_empty() || s == "UNKNOWN" {
                Arc::from(UNKNOWN)
            } else {
                Arc::from(s)
            }
        };
        let version = |s: &str| -> Option<Str> {
            if self.versions {
                major_version(s).map(Arc::from)
            } else {
                None
            }
        };
        match self.parser.parse(ua) {
            Some(r) => {
                let unknown = r.category == "UNKNOWN" && r.name == "UNKNOWN" && r.os == "UNKNOWN";
                ClientClass {
                    device: text(r.category),
                    os: text(r.os),
                    os_version: version(&r.os_version),
                    browser: text(r.name),
                    browser_version: version(r.version),
                    crawler: r.category == "crawler",
                    unknown,
                    empty: false,
                }
            }
            None => {
                let u: Str = Arc::from(UNKNOWN);
                ClientClass {
                    device: u.clone(),
                    os: u.clone(),
                    os_version: None,
                    browser: u,
                    browser_version: None,
                    crawler: false,
                    unknown: true,
                    empty: false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick emptiness check says what trimming says, for values with whitespace of every
    /// kind `trim` removes (ASCII, vertical tab, NEL, no-break and em spaces) at either end.
    #[test]
    fn emptiness_is_decided_as_trimming_decides_it() {
        let ends = [
            "", " ", "\t", "\u{b}", "\r\n", "\u{85}", "\u{a0}", "\u{2003}", "-", "a", "é", "~",
        ];
        let middles = ["", "-", "--", "x", "curl/8.0", " ", "\u{85}"];
        for a in ends {
            for m in middles {
                for b in ends {
                    let ua = format!("{a}{m}{b}");
                    assert_eq!(is_empty_ua(&ua), matches!(ua.trim(), "" | "-"), "{ua:?}");
                }
            }
        }
        assert!(is_empty_ua(" - "));
        assert!(!is_empty_ua("-a"));
    }

    #[test]
    fn classifies_browsers_crawlers_and_empty() {
        let mut c = UaClassifier::new(true);
        let chrome = c.classify(Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/32.0.1700.77 Safari/537.36"));
        assert_eq!(
            (
                &*chrome.device,
                &*chrome.os,
                chrome.os_version.as_deref(),
                &*chrome.browser,
                chrome.browser_version.as_deref()
            ),
            ("pc", "Mac OSX", Some("10"), "Chrome", Some("32"))
        );
        assert!(!chrome.crawler && !chrome.unknown && !chrome.empty);
        let bot = c.classify(Some(
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ));
        assert_eq!((&*bot.device, &*bot.browser), ("crawler", "Googlebot"));
        assert!(bot.crawler);
        let iphone = c.classify(Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"));
        assert_eq!(
            (&*iphone.device, &*iphone.os, &*iphone.browser),
            ("smartphone", "iPhone", "Safari")
        );
        for empty in [None, Some(""), Some("-")] {
            let e = c.classify(empty);
            assert!(e.empty && e.unknown);
            assert_eq!(&*e.device, "(unknown)");
        }
        let odd = c.classify(Some("xyzzy MARKER-UA 1.0"));
        assert!(odd.unknown && !odd.empty);
        assert_eq!(&*odd.browser, "(unknown)");
        // No field of a class ever holds the User-Agent text.
        assert!(!format!("{odd:?}").contains("MARKER-UA"));
    }

    #[test]
    fn versions_are_dropped_when_the_policy_forbids_them() {
        let mut c = UaClassifier::new(false);
        let ff = c.classify(Some(
            "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/118.0",
        ));
        assert_eq!(&*ff.browser, "Firefox");
        assert_eq!(ff.browser_version, None);
        assert_eq!(ff.os_version, None);
    }

    #[test]
    fn identical_classes_share_one_allocation() {
        let mut c = UaClassifier::new(true);
        let a = c.classify(Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"));
        let b = c.classify(Some("Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.71 Safari/537.36"));
        assert!(Arc::ptr_eq(&a, &b));
    }
}
