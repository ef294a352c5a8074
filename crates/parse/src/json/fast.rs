//! A scanner for the usual JSON access-log line: one flat object (nginx's `escape=json` lines,
//! say) whose strings hold no escape and no control character. It fills the record as the
//! `serde_json` walk does, without its general machinery, and answers only for lines it can
//! decide exactly as the walk would; for anything else (an escape or a control character
//! anywhere in the line, tabs or newlines between tokens, a nested value, a number that is not
//! a plain integer where a mapped field reads it, a mapped text field that is not a string or
//! `null`, invalid JSON…) it returns `None` and the walk parses the line from the start.
//! `tests.rs` checks the two against each other on generated lines.

use super::{JsonFormat, Scalar, Target, TextValue};
use crate::bytes::find_any;
use crate::{Field, ParseError, Record};

/// Parses `line` if it is an object of the simple kind above, with a mapping whose paths are
/// all one key long ([`JsonFormat::flat`]).
pub(super) fn parse<'a>(
    format: &JsonFormat,
    line: &'a [u8],
) -> Option<Result<Record<'a>, ParseError>> {
    // Without backslashes and control characters, every string ends at the next `"`, and the
    // only whitespace between tokens is the space.
    if has_escape_or_control(line) {
        return None;
    }
    let mut state = format.state();
    let mut pos = skip_spaces(line, 0);
    if line.get(pos) != Some(&b'{') {
        return None;
    }
    pos = skip_spaces(line, pos + 1);
    if line.get(pos) == Some(&b'}') {
        pos += 1;
    } else {
        loop {
            let (key, after) = string(line, pos)?;
            pos = skip_spaces(line, after);
            if line.get(pos) != Some(&b':') {
                return None;
            }
            pos = skip_spaces(line, pos + 1);
            let target = format
                .root
                .children
                .iter()
                .find(|c| *c.key == *key)
                .and_then(|c| c.target);
            pos = match target {
                None => skip_value(line, pos)?,
                Some(Target::Text(text)) => match line.get(pos)? {
                    b'"' => {
                        let (v, after) = string(line, pos)?;
                        TextValue {
                            text,
                            state: &mut state,
                            in_array: false,
                        }
                        .store(Field::Borrowed(v));
                        after
                    }
                    b'n' => literal(line, pos, b"null")?,
                    _ => return None,
                },
                Some(target) => {
                    let scalar = Scalar {
                        target,
                        state: &mut state,
                    };
                    match line.get(pos)? {
                        b'"' => {
                            let (v, after) = string(line, pos)?;
                            // The walk reads these as `str`: it would refuse bytes that are
                            // not UTF-8.
                            std::str::from_utf8(v).ok()?;
                            scalar.take_text(v);
                            after
                        }
                        b'n' => literal(line, pos, b"null")?,
                        b'0'..=b'9' => {
                            let (v, after) = plain_integer(line, pos)?;
                            scalar.take_u64(v);
                            after
                        }
                        _ => return None,
                    }
                }
            };
            pos = skip_spaces(line, pos);
            match line.get(pos)? {
                b',' => pos = skip_spaces(line, pos + 1),
                b'}' => {
                    pos += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if skip_spaces(line, pos) != line.len() {
        return None;
    }
    Some(super::finish(state))
}

/// Whether `line` has a `\` or a byte below 0x20. Written without early exits within each
/// 64 bytes, so that the compiler checks them with vector instructions.
fn has_escape_or_control(line: &[u8]) -> bool {
    let mut chunks = line.chunks_exact(64);
    for chunk in chunks.by_ref() {
        if chunk
            .iter()
            .fold(false, |any, &b| any | (b < 0x20) | (b == b'\\'))
        {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20 || b == b'\\')
}

fn skip_spaces(line: &[u8], mut pos: usize) -> usize {
    while line.get(pos) == Some(&b' ') {
        pos += 1;
    }
    pos
}

/// The string that starts with the `"` at `line[pos]` (which holds no escape), and the position
/// after its closing quote.
fn string(line: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    if line.get(pos) != Some(&b'"') {
        return None;
    }
    // Keys and values are short: 16 bytes at a time in the code beats `memchr`'s setup.
    let end = find_any(line, pos + 1, [b'"'])?;
    Some((&line[pos + 1..end], end + 1))
}

/// The position after `word` (`null`, `true`, `false`) at `line[pos]`.
fn literal(line: &[u8], pos: usize, word: &[u8]) -> Option<usize> {
    line[pos..].starts_with(word).then_some(pos + word.len())
}

/// A non-negative integer without fraction or exponent, of at most 19 digits (so it fits a
/// `u64`, which is how the walk then sees it), and the position after it.
fn plain_integer(line: &[u8], pos: usize) -> Option<(u64, usize)> {
    let digits = line[pos..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let end = pos + digits;
    // A leading zero is invalid JSON (unless it is the whole number); a fraction or an
    // exponent makes the walk read a float.
    if digits > 19
        || (digits > 1 && line[pos] == b'0')
        || matches!(line.get(end), Some(b'.' | b'e' | b'E'))
    {
        return None;
    }
    let v = line[pos..end]
        .iter()
        .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
    Some((v, end))
}

/// The position after the value at `line[pos]` that no field reads: a string, a number (of
/// JSON's grammar), `true`, `false` or `null`. `None` for anything else (objects and arrays
/// too).
fn skip_value(line: &[u8], pos: usize) -> Option<usize> {
    match line.get(pos)? {
        b'"' => string(line, pos).map(|(_, after)| after),
        b't' => literal(line, pos, b"true"),
        b'f' => literal(line, pos, b"false"),
        b'n' => literal(line, pos, b"null"),
        b'-' | b'0'..=b'9' => number(line, pos),
        _ => None,
    }
}

/// The position after the JSON number at `line[pos]`:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number(line: &[u8], mut pos: usize) -> Option<usize> {
    let digits_from = |p: usize| line[p..].iter().take_while(|b| b.is_ascii_digit()).count();
    if line.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match digits_from(pos) {
        0 => return None,
        n if n > 1 && line[pos] == b'0' => return None,
        n => pos += n,
    }
    if line.get(pos) == Some(&b'.') {
        match digits_from(pos + 1) {
            0 => return None,
            n => pos += 1 + n,
        }
    }
    if matches!(line.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        if matches!(line.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        match digits_from(pos) {
            0 => return None,
            n => pos += n,
        }
    }
    Some(pos)
}
