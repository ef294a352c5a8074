//! Enrichment: a User-Agent becomes a client class, an address becomes a place.
//!
//! Both results are cached: real logs hold few distinct User-Agents, most lines repeat an address
//! (the answer per address is cached, shared by the workers), and many addresses share one
//! database record. What comes out is already as coarse as the pipeline asks: major versions
//! only, and a place no finer than the pipeline's geographic level. The raw inputs (the full
//! User-Agent, the address) are only borrowed for the call and never kept in a result; the
//! caches hold recent ones in memory for the run, and nothing writes them anywhere.
//!
//! ```
//! use logcensus_enrich::UaClassifier;
//! let mut ua = UaClassifier::new(true);
//! let class = ua.classify(Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0"));
//! assert_eq!(&*class.browser, "Firefox");
//! assert_eq!(class.browser_version.as_deref(), Some("115"));
//! assert_eq!(&*class.device, "pc");
//! ```

mod geo;
mod key_hash;
mod prefetch;
mod referrer;
mod ua;

pub use geo::{Answered, GeoDb, GeoError, GeoLookup, IndexError, Place};
pub use prefetch::prefetch;
pub use referrer::ReferrerClassifier;
pub use ua::{ClientClass, Kept, UaClassifier};

/// A shared, immutable string.
pub type Str = std::sync::Arc<str>;

/// The value written for anything that could not be determined.
pub const UNKNOWN: &str = "(unknown)";
