//! The partial file format.
//!
//! ```text
//! magic        8 bytes   "\x89LCPART\n" (the high byte and the newline catch text-mode copies)
//! version      u16 LE    FORMAT_VERSION
//! header_len   u32 LE
//! header       JSON      Header: the PartialMeta, the periods with data, where unattributed
//!                        rejections count; readable with `head -c` when debugging offsets
//! body_len     u64 LE
//! body         bytes     Aggregates::to_bytes (visitor hashes: private)
//! checksum     32 bytes  BLAKE3 of everything above
//! ```

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{OffsetRange, PartialMeta};

pub(crate) const MAGIC: [u8; 8] = *b"\x89LCPART\n";
/// 2: visitor hashes of an address and a User-Agent digest (see `logcensus_aggregate::DayKey`);
/// version 1's hashes count the same visitors differently, so its partials are not merged.
pub(crate) const FORMAT_VERSION: u16 = 2;
const CHECKSUM_LEN: usize = 32;
const PREFIX_LEN: usize = MAGIC.len() + 2 + 4;

/// What a partial says about itself, readable without decoding its aggregates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Header {
    pub meta: PartialMeta,
    /// Every period the aggregates hold data for, sorted, including `unattributed_period`.
    pub periods: Vec<i64>,
    /// The period start where the aggregates' unattributed rejections are counted on reading.
    pub unattributed_period: Option<i64>,
}

/// Why bytes are not a readable partial (the caller adds the path).
#[derive(Debug)]
pub(crate) enum Invalid {
    NotAPartial,
    Version(u16),
    Corrupt {
        detail: String,
        claims: Option<BTreeMap<i32, OffsetRange>>,
    },
}

fn corrupt(detail: impl Into<String>) -> Invalid {
    Invalid::Corrupt {
        detail: detail.into(),
        claims: None,
    }
}

/// A verified partial: its header, where its body is, and its checksum.
pub(crate) struct Parsed {
    pub header: Header,
    pub body: Range<usize>,
    pub checksum: blake3::Hash,
}

pub(crate) fn encode(header: &Header, body: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("a header always serializes");
    let header_len = u32::try_from(json.len()).expect("a header is far below 4 GiB");
    let mut out = Vec::with_capacity(PREFIX_LEN + json.len() + 8 + body.len() + CHECKSUM_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// The header, if its declared length is in bounds and it parses: what a damaged file claims.
fn claims(bytes: &[u8]) -> Option<BTreeMap<i32, OffsetRange>> {
    let len = u32::from_le_bytes(bytes.get(10..14)?.try_into().ok()?) as usize;
    let json = bytes.get(PREFIX_LEN..PREFIX_LEN.checked_add(len)?)?;
    serde_json::from_slice::<Header>(json)
        .ok()
        .map(|h| h.meta.offsets)
}

/// The checksum stored at the end of a file that is long enough to have one.
pub(crate) fn stored_checksum(bytes: &[u8]) -> Option<blake3::Hash> {
    let tail: [u8; CHECKSUM_LEN] = bytes
        .get(bytes.len().checked_sub(CHECKSUM_LEN)?..)?
        .try_into()
        .ok()?;
    Some(blake3::Hash::from_bytes(tail))
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Parsed, Invalid> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(Invalid::NotAPartial);
    }
    if bytes.len() < PREFIX_LEN + 8 + CHECKSUM_LEN {
        return Err(corrupt(format!("truncated: {} bytes", bytes.len())));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(Invalid::Version(version));
    }
    let (content, _) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    let checksum = stored_checksum(bytes).expect("length checked above");
    if blake3::hash(content) != checksum {
        return Err(Invalid::Corrupt {
            detail: "checksum mismatch".into(),
            claims: claims(bytes),
        });
    }
    // The checksum holds: a bad layout from here on is a writer bug, not damage.
    let header_len = u32::from_le_bytes(bytes[10..14].try_into().expect("4 bytes")) as usize;
    let header_end = PREFIX_LEN
        .checked_add(header_len)
        .filter(|&e| e + 8 <= content.len())
        .ok_or_else(|| corrupt("header length out of bounds"))?;
    let header: Header = serde_json::from_slice(&bytes[PREFIX_LEN..header_end])
        .map_err(|e| corrupt(format!("header: {e}")))?;
    let body_len = u64::from_le_bytes(
        bytes[header_end..header_end + 8]
            .try_into()
            .expect("8 bytes"),
    );
    let body_start = header_end + 8;
    if usize::try_from(body_len).ok() != Some(content.len() - body_start) {
        return Err(corrupt("body length does not match the file length"));
    }
    Ok(Parsed {
        header,
        body: body_start..content.len(),
        checksum,
    })
}
