//! `Hash` for [`Place`](crate::Place) and [`ClientClass`](crate::ClientClass) in one write.
//!
//! Every counted line looks its place and its client class up in the aggregates' maps. A derived
//! `Hash` feeds the hasher each string, its terminator and each `Option` tag separately, some 16
//! small writes for a class, and SipHash pays for every write; packing the fields into one buffer
//! and writing it once costs a fraction. The buffer is an unambiguous encoding of the value
//! (tags and length prefixes), so equal values hash equally and different values feed the hasher
//! different bytes; a value too long for the buffer is hashed field by field instead (that choice
//! depends only on the value, so it is the same for equal values).

use std::hash::{Hash, Hasher};

use crate::Str;

/// A value's encoding, up to 192 bytes.
pub(crate) struct KeyBuf {
    buf: [u8; 192],
    len: usize,
    overflow: bool,
}

impl KeyBuf {
    pub(crate) fn new() -> KeyBuf {
        KeyBuf {
            buf: [0; 192],
            len: 0,
            overflow: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(bytes);
                self.len = end;
            }
            _ => self.overflow = true,
        }
    }

    pub(crate) fn byte(&mut self, b: u8) {
        self.push(&[b]);
    }

    pub(crate) fn str(&mut self, s: &str) {
        match u8::try_from(s.len()) {
            Ok(n) => {
                self.push(&[n]);
                self.push(s.as_bytes());
            }
            Err(_) => self.overflow = true,
        }
    }

    pub(crate) fn opt(&mut self, s: &Option<Str>) {
        match s {
            None => self.byte(0),
            Some(s) => {
                self.byte(1);
                self.str(s);
            }
        }
    }

    /// Writes the encoding in one call, or returns false when it did not fit.
    pub(crate) fn write_to<H: Hasher>(&self, state: &mut H) -> bool {
        if self.overflow {
            return false;
        }
        state.write(&self.buf[..self.len]);
        true
    }
}

impl Hash for crate::Place {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut k = KeyBuf::new();
        k.opt(&self.continent);
        k.opt(&self.country);
        k.opt(&self.region);
        if !k.write_to(state) {
            self.continent.hash(state);
            self.country.hash(state);
            self.region.hash(state);
        }
    }
}

impl Hash for crate::ClientClass {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut k = KeyBuf::new();
        k.str(&self.device);
        k.str(&self.os);
        k.opt(&self.os_version);
        k.str(&self.browser);
        k.opt(&self.browser_version);
        k.byte(
            u8::from(self.crawler) | (u8::from(self.unknown) << 1) | (u8::from(self.empty) << 2),
        );
        if !k.write_to(state) {
            self.device.hash(state);
            self.os.hash(state);
            self.os_version.hash(state);
            self.browser.hash(state);
            self.browser_version.hash(state);
            (self.crawler, self.unknown, self.empty).hash(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;
    use std::sync::Arc;

    use crate::{ClientClass, Place};

    fn place(c: &str, n: Option<&str>, r: Option<&str>) -> Place {
        Place {
            continent: Some(Arc::from(c)),
            country: n.map(Arc::from),
            region: r.map(Arc::from),
        }
    }

    #[test]
    fn equal_values_hash_equally_and_fields_do_not_run_together() {
        let s = std::collections::hash_map::RandomState::new();
        let a = place("EU", Some("DE"), Some("DE-BY"));
        assert_eq!(s.hash_one(&a), s.hash_one(a.clone()));
        // Without length prefixes these two would encode alike.
        let b = place("EUD", Some("E"), Some("DE-BY"));
        assert_ne!(s.hash_one(&a), s.hash_one(&b));
        assert_ne!(
            s.hash_one(place("EU", None, None)),
            s.hash_one(place("EU", Some(""), None))
        );
        // Too long for the buffer: hashed field by field, still equal for equal values.
        let long = "x".repeat(300);
        let l = place("EU", Some(&long), Some(&long));
        assert_eq!(s.hash_one(&l), s.hash_one(l.clone()));
        assert_ne!(s.hash_one(&l), s.hash_one(&a));
    }

    #[test]
    fn client_flags_are_part_of_the_hash() {
        let s = std::collections::hash_map::RandomState::new();
        let u: crate::Str = Arc::from("(unknown)");
        let c = ClientClass {
            device: u.clone(),
            os: u.clone(),
            os_version: None,
            browser: u,
            browser_version: None,
            crawler: false,
            unknown: true,
            empty: true,
        };
        let d = ClientClass {
            empty: false,
            ..c.clone()
        };
        assert_eq!(s.hash_one(&c), s.hash_one(c.clone()));
        assert_ne!(s.hash_one(&c), s.hash_one(&d));
    }
}
