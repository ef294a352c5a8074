//! User-Agent → device category, browser and OS family and major version (woothee).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

use twox_hash::XxHash3_128;

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
    /// Keyed by the User-Agent's [`Fingerprint`], not its text: a line's User-Agent is then
    /// hashed once and compared with 16 bytes in the table, where comparing the text meant
    /// reading ~130 bytes kept elsewhere, seldom in the nearest caches (on the 1M-line
    /// benchmark, 5% of the run's time went to that `memcmp`). At most `CACHE_LIMIT` entries,
    /// whatever the keys.
    cache: HashMap<Fingerprint, u32, BuildHasherDefault<FingerprintHasher>>,
    /// The fingerprints' seed and secret, drawn when the classifier is made.
    seed: u64,
    secret: Box<[u8]>,
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

/// A User-Agent's 128-bit XXH3 hash under a random seed, which stands for it in the cache.
///
/// Two User-Agents with one fingerprint would be classified alike and share the digest their
/// visitors are hashed with. By accident, that is about as likely as one collision in 2^128
/// (for the cache's 50,000 User-Agents at most, under 10^-29), far below any other error of a
/// count. By design, it buys a client nothing: a client that made its User-Agent collide with
/// another's would be counted as if it had sent that other User-Agent, which it can simply do.
/// The fingerprint is kept in memory only, and says nothing a count shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Fingerprint(u128);

/// A [`Fingerprint`] is already a uniform hash: the table takes its low 64 bits.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is called (a `Fingerprint` hashes its one field); a fallback all
        // the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

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
        // A random number from the standard library's hashers' keys (drawn from the operating
        // system once per thread, then stepped).
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        UaClassifier {
            parser: woothee::parser::Parser::new(),
            cache: HashMap::default(),
            seed,
            secret: XxHash3_128::with_seed(seed).into_secret(),
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
        let fingerprint = self.fingerprint(ua);
        if let Some(&i) = self.cache.get(&fingerprint) {
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
        self.cache.insert(fingerprint, i as u32);
        self.known.push(Known { class, kept: None });
        let known = &mut self.known[i];
        (&known.class, Some(&mut known.kept))
    }

    /// `ua`'s fingerprint under this classifier's seed.
    fn fingerprint(&self, ua: &str) -> Fingerprint {
        Fingerprint(
            XxHash3_128::oneshot_with_seed_and_secret(self.seed, &self.secret, ua.as_bytes())
                .expect("a secret made by the hasher has the length it needs"),
        )
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

    /// The cache tells apart User-Agents that differ only in their last digits, short ones and
    /// ones longer than 240 bytes (which XXH3 hashes with the secret), met once and then again
    /// in another order.
    #[test]
    fn user_agents_that_differ_in_their_last_digits_are_told_apart() {
        let mut c = UaClassifier::new(true);
        let padding = "x".repeat(250);
        let ua = |v: u32, long: bool| {
            let pad = if long { padding.as_str() } else { "" };
            format!("Mozilla/5.0 (X11; Linux x86_64; rv:109.0) {pad}Gecko/20100101 Firefox/{v}.0")
        };
        for round in 0..2 {
            for i in 0..4_000 {
                let v = if round == 0 { i } else { 3_999 - i };
                let long = v % 2 == 1;
                let class = c.classify(Some(&ua(v, long)));
                assert_eq!(class.browser_version.as_deref(), Some(&*v.to_string()));
            }
        }
        assert_eq!(c.cache.len(), 4_000);
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
