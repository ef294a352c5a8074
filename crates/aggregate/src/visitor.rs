//! Distinct visitors without an identifier: a keyed hash of (address, User-Agent) under a key
//! that changes every UTC day and is derived from a secret that never reaches an output.
//!
//! The hash is SipHash-1-3 of the address and a digest of the User-Agent (SipHash-1-3 too, under
//! the same key, with a different first byte), so that the long User-Agent is hashed once per
//! distinct value and day rather than with every request. Partials written before this layout
//! (state format 1) hold hashes of the old one and are refused by version.

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// The secret visitor keys are derived from. Its `Debug` prints nothing of it, and its bytes are
/// overwritten when it is dropped.
#[derive(Clone, zeroize::ZeroizeOnDrop)]
pub struct VisitorSecret {
    bytes: [u8; 32],
    /// False when the secret was made up for this run (counts will not merge across runs).
    #[zeroize(skip)]
    pub persistent: bool,
}

impl std::fmt::Debug for VisitorSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VisitorSecret(..)")
    }
}

/// Why a visitor key file cannot be used. Never includes the file's content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the visitor key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the visitor key file {path} holds {len} bytes; it needs at least 16 bytes of secret (e.g. `head -c 32 /dev/urandom | base64 > {path}`)")]
    TooShort { path: String, len: usize },
}

impl VisitorSecret {
    /// Reads a secret from a file (surrounding whitespace ignored; at least 16 bytes).
    pub fn from_file(path: &std::path::Path) -> Result<VisitorSecret, SecretError> {
        let shown = path.display().to_string();
        // The file's bytes are overwritten when they go out of scope.
        let raw =
            zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| SecretError::Read {
                path: shown.clone(),
                source,
            })?);
        let trimmed = raw.trim_ascii();
        if trimmed.len() < 16 {
            return Err(SecretError::TooShort {
                path: shown,
                len: trimmed.len(),
            });
        }
        let secret = VisitorSecret {
            bytes: blake3::derive_key("logcensus visitor secret v1", trimmed),
            persistent: true,
        };
        Ok(secret)
    }

    /// A random secret for this run only.
    pub fn random() -> VisitorSecret {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        VisitorSecret {
            bytes,
            persistent: false,
        }
    }

    /// A fixed secret, for tests.
    pub fn from_bytes(bytes: [u8; 32]) -> VisitorSecret {
        VisitorSecret {
            bytes,
            persistent: true,
        }
    }

    /// The key that picks which rows a visitor over the contribution bound keeps (see
    /// `logcensus-release`). Derived from the secret with its own context: it reveals nothing
    /// of the day keys.
    pub fn selection_key(&self) -> [u8; 16] {
        let k = blake3::derive_key("logcensus contribution bounding v1", &self.bytes);
        k[..16].try_into().unwrap()
    }

    /// The hasher for one UTC day (`day` = Unix seconds / 86400).
    pub fn day_key(&self, day: i64) -> DayKey {
        let mut material = zeroize::Zeroizing::new([0u8; 40]);
        material[..32].copy_from_slice(&self.bytes);
        material[32..].copy_from_slice(&day.to_le_bytes());
        let k = zeroize::Zeroizing::new(blake3::derive_key(
            "logcensus visitor day key v1",
            &*material,
        ));
        DayKey {
            day,
            k0: u64::from_le_bytes(k[..8].try_into().unwrap()),
            k1: u64::from_le_bytes(k[8..16].try_into().unwrap()),
        }
    }
}

/// The key of one day. Derived when a line of the day comes, dropped (and overwritten) when
/// the worker moves to another day or ends; it is never written anywhere.
#[derive(Clone, zeroize::ZeroizeOnDrop)]
pub struct DayKey {
    #[zeroize(skip)]
    day: i64,
    k0: u64,
    k1: u64,
}

impl DayKey {
    /// The day this key is for.
    pub fn day(&self) -> i64 {
        self.day
    }

    /// A visitor's hash: equal for the same (address, User-Agent) on the same day.
    pub fn visitor(&self, address: &[u8; 16], user_agent: &[u8]) -> u64 {
        self.visitor_of(address, self.user_agent(user_agent))
    }

    /// The day's digest of a User-Agent, for [`DayKey::visitor_of`]. A worker computes it once
    /// per distinct User-Agent and day, where hashing the whole User-Agent with every request's
    /// address took a tenth of a line's time.
    pub fn user_agent(&self, user_agent: &[u8]) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        // Its own first byte: no digest input is also a visitor input (those start with 1).
        h.write_u8(0);
        h.write(user_agent);
        h.finish()
    }

    /// A visitor's hash from its address and its User-Agent's [`DayKey::user_agent`] digest:
    /// the same as [`DayKey::visitor`].
    ///
    /// SipHash-1-3 of the 25 bytes `1`, the address, the digest (its bytes in the machine's
    /// order, as the streaming hasher's `write_u64` took them), computed on the message's four
    /// 8-byte words directly: the streaming hasher's buffering took half of this function's
    /// time, once per request.
    #[inline]
    pub fn visitor_of(&self, address: &[u8; 16], user_agent: u64) -> u64 {
        let lo = u64::from_le_bytes(address[..8].try_into().expect("8 bytes"));
        let hi = u64::from_le_bytes(address[8..].try_into().expect("8 bytes"));
        let user_agent = u64::from_le_bytes(user_agent.to_ne_bytes());
        sip13(
            self.k0,
            self.k1,
            [
                1 | lo << 8,
                lo >> 56 | hi << 8,
                hi >> 56 | user_agent << 8,
                // The last word: the message's 25th byte, and its length in the top byte.
                user_agent >> 56 | 25 << 56,
            ],
        )
    }
}

/// SipHash-1-3 under (`k0`, `k1`) of a message whose words, the last one with the length in its
/// top byte as SipHash pads it, are `words`.
#[inline]
fn sip13(k0: u64, k1: u64, words: [u64; 4]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let round = |v: &mut [u64; 4]| {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    };
    for m in words {
        v[3] ^= m;
        round(&mut v);
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    round(&mut v);
    round(&mut v);
    round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Keeps the current day's key and derives a new one when the day changes.
pub struct VisitorKeys {
    secret: VisitorSecret,
    current: Option<DayKey>,
}

impl VisitorKeys {
    pub fn new(secret: VisitorSecret) -> Self {
        VisitorKeys {
            secret,
            current: None,
        }
    }

    /// The visitor hash of (address, User-Agent) at `unix_seconds`.
    pub fn visitor(&mut self, unix_seconds: i64, address: &[u8; 16], user_agent: &[u8]) -> u64 {
        self.key(unix_seconds).visitor(address, user_agent)
    }

    /// The key of the day of `unix_seconds`.
    pub fn key(&mut self, unix_seconds: i64) -> &DayKey {
        let day = unix_seconds.div_euclid(86_400);
        if self.current.as_ref().is_none_or(|k| k.day != day) {
            // The previous day's key is dropped here, which overwrites it.
            self.current = Some(self.secret.day_key(day));
        }
        match &self.current {
            Some(key) => key,
            None => unreachable!("set just above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_visitor_same_day_only() {
        let mut keys = VisitorKeys::new(VisitorSecret::from_bytes([7; 32]));
        let a = [1u8; 16];
        let t = 1_431_857_103;
        let v1 = keys.visitor(t, &a, b"UA");
        assert_eq!(v1, keys.visitor(t + 60, &a, b"UA"));
        assert_ne!(v1, keys.visitor(t, &a, b"UA2"));
        assert_ne!(v1, keys.visitor(t, &[2u8; 16], b"UA"));
        assert_ne!(
            v1,
            keys.visitor(t + 86_400, &a, b"UA"),
            "a new day, a new key"
        );
        let key = keys.key(t).clone();
        assert_eq!(v1, key.visitor_of(&a, key.user_agent(b"UA")));
        assert_ne!(key.user_agent(b"UA"), key.user_agent(b"UA2"));
        let mut other = VisitorKeys::new(VisitorSecret::from_bytes([8; 32]));
        assert_ne!(
            v1,
            other.visitor(t, &a, b"UA"),
            "another secret, other hashes"
        );
    }

    /// The word-wise hash is what the streaming SipHash-1-3 gave for the same calls (so hashes
    /// in checkpoints written before it still match), for many keys, addresses and digests.
    #[test]
    fn visitor_of_is_siphash_of_its_bytes() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for i in 0..2_000 {
            let key = DayKey {
                day: 0,
                k0: next(),
                k1: next(),
            };
            let mut address = [0u8; 16];
            address[..8].copy_from_slice(&next().to_le_bytes());
            address[8..].copy_from_slice(&next().to_le_bytes());
            // Some addresses of all-ones bytes, where a wrong shift would show.
            if i % 7 == 0 {
                address = [0xff; 16];
            }
            let digest = if i % 5 == 0 { u64::MAX } else { next() };
            let mut h = SipHasher13::new_with_keys(key.k0, key.k1);
            h.write_u8(1);
            h.write(&address);
            h.write_u64(digest);
            assert_eq!(key.visitor_of(&address, digest), h.finish(), "case {i}");
        }
    }

    #[test]
    fn short_key_file_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "hunter2\n").unwrap();
        let err = VisitorSecret::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("holds 7 bytes; it needs at least 16"), "{err}");
        assert!(!err.contains("hunter2"));
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        let s = VisitorSecret::from_file(&p).unwrap();
        assert!(s.persistent);
        assert_eq!(format!("{s:?}"), "VisitorSecret(..)");
    }
}
