//! Reading strings out of a MaxMind DB data record, at the offset the walker found.
//!
//! The `maxminddb` crate decodes a record only from a lookup of an address, which walks the
//! tree again; the walker already knows the record's offset. This reads just what a place
//! needs: the string at a path of map keys and array indexes (`country.iso_code`,
//! `subdivisions.0.iso_code`), following the format's pointers and skipping every other value
//! without decoding it. It answers what the crate's `decode_path::<String>` answers (tests
//! compare the two), and `None` for anything malformed: a value past the end, a pointer to a
//! pointer, a type the format does not define, nesting deeper than [`MAX_DEPTH`].

use super::Seg;

/// Maps and arrays nested deeper than this are not skipped (real records nest 3 deep).
const MAX_DEPTH: u32 = 32;

/// Data-section types (MaxMind DB format 2.0).
const POINTER: u8 = 1;
const STRING: u8 = 2;
const DOUBLE: u8 = 3;
const BYTES: u8 = 4;
const UINT16: u8 = 5;
const UINT32: u8 = 6;
const MAP: u8 = 7;
const INT32: u8 = 8;
const UINT64: u8 = 9;
const UINT128: u8 = 10;
const ARRAY: u8 = 11;
const BOOLEAN: u8 = 14;
const FLOAT: u8 = 15;

/// A field's header: its type, its size (for a pointer: the offset it points to), and where
/// its payload starts (for a pointer: where the field ends).
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: u8,
    size: usize,
    payload: usize,
}

fn be(bytes: &[u8]) -> usize {
    bytes.iter().fold(0, |v, &b| (v << 8) | usize::from(b))
}

#[inline]
fn header(data: &[u8], at: usize) -> Option<Header> {
    let control = *data.get(at)?;
    let (kind, size) = (control >> 5, control & 0x1f);
    // Most fields: a type of its own (not a pointer, not extended) and a size under 29, held in
    // the control byte.
    if kind > POINTER && size < 29 {
        return Some(Header {
            kind,
            size: usize::from(size),
            payload: at + 1,
        });
    }
    header_in_full(data, at, control)
}

/// [`header`] of a pointer, an extended type or a size in further bytes.
fn header_in_full(data: &[u8], at: usize, control: u8) -> Option<Header> {
    let mut at = at + 1;
    let mut kind = control >> 5;
    if kind == POINTER {
        let (len, base) = match (control >> 3) & 3 {
            0 => (1, 0),
            1 => (2, 2048),
            2 => (3, 526_336),
            _ => (4, 0),
        };
        let bytes = data.get(at..at + len)?;
        let high = if len == 4 {
            0
        } else {
            usize::from(control & 7) << (8 * len)
        };
        return Some(Header {
            kind,
            size: (high | be(bytes)) + base,
            payload: at + len,
        });
    }
    if kind == 0 {
        // Extended types are 8 and up.
        kind = 7u8.checked_add(*data.get(at)?).filter(|&k| k > 7)?;
        at += 1;
    }
    let size = match usize::from(control & 0x1f) {
        n @ 0..=28 => n,
        29 => 29 + be(data.get(at..at + 1)?),
        30 => 285 + be(data.get(at..at + 2)?),
        _ => 65_821 + be(data.get(at..at + 3)?),
    };
    let extra = match control & 0x1f {
        29 => 1,
        30 => 2,
        31 => 3,
        _ => 0,
    };
    Some(Header {
        kind,
        size,
        payload: at + extra,
    })
}

/// The header of the value at `at`, through one pointer if it is one.
fn value(data: &[u8], at: usize) -> Option<Header> {
    let h = header(data, at)?;
    if h.kind != POINTER {
        return Some(h);
    }
    let target = header(data, h.size)?;
    (target.kind != POINTER).then_some(target)
}

/// Where the field at `at` ends (a pointer is not followed: it ends after its own bytes).
fn skip(data: &[u8], at: usize, depth: u32) -> Option<usize> {
    // A pointer (most map keys are) ends after its 1 to 4 bytes, whatever it points to.
    let control = *data.get(at)?;
    if control >> 5 == POINTER {
        let end = at + 2 + usize::from((control >> 3) & 3);
        return (end <= data.len()).then_some(end);
    }
    let h = header(data, at)?;
    let end = |n: usize| {
        let end = h.payload.checked_add(n)?;
        (end <= data.len()).then_some(end)
    };
    match h.kind {
        POINTER => Some(h.payload),
        BOOLEAN => Some(h.payload),
        STRING | BYTES | UINT16 | UINT32 | INT32 | UINT64 | UINT128 => end(h.size),
        DOUBLE if h.size == 8 => end(8),
        FLOAT if h.size == 4 => end(4),
        MAP | ARRAY if depth > 0 => {
            let fields = if h.kind == MAP { h.size * 2 } else { h.size };
            let mut at = h.payload;
            for _ in 0..fields {
                at = skip(data, at, depth - 1)?;
            }
            Some(at)
        }
        _ => None,
    }
}

/// The string at `path` in the record at `offset` of the data section `data`, if there is one.
pub(super) fn string_at(data: &[u8], offset: usize, path: &[Seg]) -> Option<String> {
    let mut at = offset;
    for seg in path {
        let h = value(data, at)?;
        match (seg, h.kind) {
            (Seg::Key(key), MAP) => {
                let mut pos = h.payload;
                let mut found = None;
                for _ in 0..h.size {
                    let k = value(data, pos)?;
                    if k.kind != STRING {
                        return None;
                    }
                    let name = data.get(k.payload..k.payload.checked_add(k.size)?)?;
                    pos = skip(data, pos, MAX_DEPTH)?;
                    if name == key.as_bytes() {
                        found = Some(pos);
                        break;
                    }
                    pos = skip(data, pos, MAX_DEPTH)?;
                }
                at = found?;
            }
            (Seg::Index(i), ARRAY) => {
                if *i >= h.size {
                    return None;
                }
                let mut pos = h.payload;
                for _ in 0..*i {
                    pos = skip(data, pos, MAX_DEPTH)?;
                }
                at = pos;
            }
            _ => return None,
        }
    }
    let h = value(data, at)?;
    if h.kind != STRING {
        return None;
    }
    let bytes = data.get(h.payload..h.payload.checked_add(h.size)?)?;
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

/// [`string_at`] of each of `paths` in the record at `offset`, reading the record's top-level
/// map once: the paths that start with a key are all looked for in one pass over its entries
/// (a place reads three, and skipping the values before each one three times over was most of
/// the cost of a record). The answers are exactly those of `string_at` path by path: an entry
/// that cannot be read ends the paths still looked for, as it ends each of their own passes.
pub(super) fn strings_at<const N: usize>(
    data: &[u8],
    offset: usize,
    paths: [&[Seg]; N],
) -> [Option<String>; N] {
    let found = heads(data, offset, paths);
    let mut out = strings_from(data, &found, paths);
    for (i, path) in paths.iter().enumerate() {
        if !matches!(path.first(), Some(Seg::Key(_))) {
            out[i] = string_at(data, offset, path);
        }
    }
    out
}

/// Where the value of each path's first key is in the record at `offset` (through a pointer,
/// to the value it points to), in one pass over the record's top-level map; `None` for a key
/// the record does not have, a pointer to a pointer, or a path that does not start with a key.
/// What the rest of a path reads depends only on this position, and a database stores a value
/// that many records share (a country, a region) once: records with the same positions have
/// the same strings ([`strings_from`]), whatever else they hold.
pub(super) fn heads<const N: usize>(
    data: &[u8],
    offset: usize,
    paths: [&[Seg]; N],
) -> [Option<usize>; N] {
    let mut found = [None; N];
    let mut open = paths.map(|p| matches!(p.first(), Some(Seg::Key(_))));
    if open.contains(&true) {
        top_level(data, offset, &paths, &mut open, &mut found);
    }
    found
}

/// The strings at `paths` given where [`heads`] found the value of each one's first key.
pub(super) fn strings_from<const N: usize>(
    data: &[u8],
    heads: &[Option<usize>; N],
    paths: [&[Seg]; N],
) -> [Option<String>; N] {
    std::array::from_fn(|i| heads[i].and_then(|at| string_at(data, at, &paths[i][1..])))
}

/// The pass of [`heads`] over the top-level map, for the paths still `open`; stops (the rest
/// stay `None`) where `string_at` would.
fn top_level<const N: usize>(
    data: &[u8],
    offset: usize,
    paths: &[&[Seg]; N],
    open: &mut [bool; N],
    found: &mut [Option<usize>; N],
) -> Option<()> {
    let h = value(data, offset)?;
    if h.kind != MAP {
        return None;
    }
    let mut pos = h.payload;
    for _ in 0..h.size {
        let k = value(data, pos)?;
        if k.kind != STRING {
            return None;
        }
        let name = data.get(k.payload..k.payload.checked_add(k.size)?)?;
        let at = skip(data, pos, MAX_DEPTH)?;
        for (i, path) in paths.iter().enumerate() {
            if let (true, Some(Seg::Key(key))) = (open[i], path.first()) {
                if name == key.as_bytes() {
                    open[i] = false;
                    found[i] = resolved(data, at);
                }
            }
        }
        if !open.contains(&true) {
            return Some(());
        }
        pos = skip(data, at, MAX_DEPTH)?;
    }
    Some(())
}

/// The position of the value at `at`: `at` itself, or where the pointer there points; `None`
/// for a pointer to a pointer (which [`value`] refuses) or an unreadable header.
fn resolved(data: &[u8], at: usize) -> Option<usize> {
    let h = header(data, at)?;
    if h.kind != POINTER {
        return Some(at);
    }
    let target = header(data, h.size)?;
    (target.kind != POINTER).then_some(h.size)
}
