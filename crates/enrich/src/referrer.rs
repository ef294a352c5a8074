//! `Referer` → the value of `referrers.referrer_domain`, with the host's class cached.
//!
//! [`classify_referrer`](logcensus_policy::rules::classify_referrer) is the rule; this applies
//! it a line at a time without redoing the costly half (lowercasing, the public-suffix lookup,
//! the site's own domains) for a host already seen: a log names few referring hosts, many
//! times each.

use std::collections::HashMap;

use logcensus_policy::rules::{classify_host, referrer_host, RefClass, RefHost};

use crate::Str;

/// Distinct hosts kept in the cache before it is cleared (bounds memory on hostile input).
const CACHE_LIMIT: usize = 50_000;

/// Classifies referrers with a bounded cache of hosts. One per worker thread.
pub struct ReferrerClassifier {
    own_domains: Vec<String>,
    /// Host as written → its value's index in `values`. Hosts come from the log: a randomly
    /// seeded hash (foldhash; minimally resistant to chosen collisions, see `UaClassifier`'s
    /// cache), in a map of at most `CACHE_LIMIT` entries. Holds no path, query or user-info,
    /// only hosts.
    cache: HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>,
    /// One allocation per distinct value, so that the aggregates can tell values apart by
    /// address; `interned` finds a value's index.
    values: Vec<Str>,
    interned: HashMap<Str, u32, foldhash::fast::RandomState>,
    decided: [Str; 3],
    scratch: String,
}

impl ReferrerClassifier {
    /// A classifier for a site whose own registrable domains are `own_domains` (lowercase).
    pub fn new(own_domains: &[String]) -> Self {
        ReferrerClassifier {
            own_domains: own_domains.to_vec(),
            cache: HashMap::default(),
            values: Vec::new(),
            interned: HashMap::default(),
            decided: [RefClass::Direct, RefClass::Invalid, RefClass::Other]
                .map(|c| Str::from(c.as_str())),
            scratch: String::new(),
        }
    }

    /// The `referrer_domain` value of a `Referer` header (`None` when absent): exactly
    /// `classify_referrer(referer, own_domains, _).as_str()`.
    pub fn classify(&mut self, referer: Option<&[u8]>) -> &Str {
        let host = match referrer_host(referer) {
            RefHost::Host(host) => host,
            // Tests, not a `match` on the class (a jump table: an indirect branch, which was
            // mispredicted on half the lines).
            RefHost::Decided(class) => {
                let i = if class == RefClass::Direct {
                    0
                } else if class == RefClass::Invalid {
                    1
                } else if class == RefClass::Other {
                    2
                } else {
                    unreachable!("decided without a host: {class:?}")
                };
                return &self.decided[i];
            }
        };
        // One lookup on a hit; on a miss a second one, rather than `entry`, which would need an
        // owned key for every line.
        if let Some(&i) = self.cache.get(host) {
            return &self.values[i as usize];
        }
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
            self.values.clear();
            self.interned.clear();
        }
        let class = classify_host(host, &self.own_domains, &mut self.scratch);
        let i = match self.interned.get(class.as_str()) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.values.len()).expect("at most CACHE_LIMIT values");
                let v = Str::from(class.as_str());
                self.values.push(v.clone());
                self.interned.insert(v, i);
                i
            }
        };
        self.cache.insert(host.into(), i);
        &self.values[i as usize]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use logcensus_policy::rules::classify_referrer;

    /// Every answer, cached or not, is the rule's, and equal values share one allocation.
    #[test]
    fn cached_answers_are_the_rules_answers() {
        let own = vec!["example.com".to_string()];
        let referers: Vec<Option<&[u8]>> = vec![
            None,
            Some(b"-"),
            Some(b""),
            Some(b"https://www.google.com/search?q=marker-query"),
            Some(b"https://WWW.Google.COM/other"),
            Some(b"http://user:secret@news.bbc.co.uk:8080/path"),
            Some(b"https://shop.example.com/cart"),
            Some(b"https://alice.github.io/"),
            Some(b"android-app://com.example"),
            Some(b"https://[2001:db8::1]/x"),
            Some(b"https://192.0.2.7/"),
            Some(b"https://localhost/"),
            Some(b"https://bad host/"),
            Some(b"not a url"),
            Some(b"https://www.google.com./"),
        ];
        let mut c = ReferrerClassifier::new(&own);
        let mut scratch = String::new();
        for round in 0..3 {
            for r in &referers {
                let want = classify_referrer(*r, &own, &mut scratch)
                    .as_str()
                    .to_string();
                assert_eq!(&**c.classify(*r), want, "{r:?} in round {round}");
            }
        }
        let a = c.classify(Some(b"https://www.google.com/a")).clone();
        let b = c.classify(Some(b"https://maps.GOOGLE.com/b")).clone();
        assert_eq!(&*a, "google.com");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&**c.classify(Some(b"https://example.com/")), "(internal)");
    }

    /// Many short, similar hosts (up to 16 bytes, many sharing their first or last 8 bytes, in
    /// either case, with a public suffix or not), looked up again and again in random order:
    /// each gets the rule's answer.
    #[test]
    fn short_hosts_get_their_own_answers() {
        let own = vec!["ab.ca".to_string()];
        let mut c = ReferrerClassifier::new(&own);
        let mut scratch = String::new();
        let mut rng = 0x0123_4567_89ab_cdefu64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let hosts: Vec<String> = (0..3_000)
            .map(|_| {
                let label: String = (0..4 + next() % 8)
                    .map(|_| b"aB"[(next() % 2) as usize] as char)
                    .collect();
                let tld = ["com", "org", "de", "io", "ca", ""][(next() % 6) as usize];
                match tld {
                    "" => label,
                    tld => format!("{label}.{tld}"),
                }
            })
            .filter(|h| h.len() <= 16)
            .collect();
        let distinct: std::collections::HashSet<String> = hosts
            .iter()
            .map(|h| {
                let url = format!("https://{h}/");
                classify_referrer(Some(url.as_bytes()), &own, &mut scratch)
                    .as_str()
                    .to_string()
            })
            .collect();
        assert!(distinct.len() > 500, "{}", distinct.len());
        for _ in 0..30_000 {
            let url = format!(
                "https://{}/p",
                hosts[(next() % hosts.len() as u64) as usize]
            );
            let want = classify_referrer(Some(url.as_bytes()), &own, &mut scratch)
                .as_str()
                .to_string();
            assert_eq!(&**c.classify(Some(url.as_bytes())), want, "{url}");
        }
    }

    /// A log of endless distinct hosts clears the cache instead of growing it, and answers stay
    /// right across the clearing.
    #[test]
    fn the_cache_is_bounded() {
        let mut c = ReferrerClassifier::new(&[]);
        for i in 0..(CACHE_LIMIT + 10) {
            let url = format!("https://h{i}.example.org/");
            assert_eq!(&**c.classify(Some(url.as_bytes())), "example.org");
        }
        assert!(c.cache.len() <= CACHE_LIMIT);
        assert_eq!(c.cache.len(), 10);
    }

    /// A host met before the cache was cleared is classified again after it, not answered from
    /// what was remembered of the values before the clearing.
    #[test]
    fn hosts_met_before_a_clearing_are_classified_again() {
        let mut c = ReferrerClassifier::new(&[]);
        assert_eq!(&**c.classify(Some(b"https://a.net/")), "a.net");
        assert_eq!(&**c.classify(Some(b"https://b.net/")), "b.net");
        for i in 0..CACHE_LIMIT {
            let url = format!("https://host-{i:08}.example.org/");
            c.classify(Some(url.as_bytes()));
        }
        assert_eq!(&**c.classify(Some(b"https://c.org/")), "c.org");
        assert_eq!(&**c.classify(Some(b"https://b.net/")), "b.net");
        assert_eq!(&**c.classify(Some(b"https://a.net/")), "a.net");
    }
}
