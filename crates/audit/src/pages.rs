//! The places in a Parquet file where a string can sit without being in any row: column chunk
//! statistics, page header statistics, the column index, and dictionary pages (a dictionary may
//! hold entries no row refers to). A writer that leaked a value there would pass a check of the
//! rows alone.
//!
//! A column whose rows already hold a flagged value is skipped here: its minimum, maximum and
//! dictionary repeat those rows, and the file fails either way.

use std::collections::HashSet;
use std::fs::File;

use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::Page;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;

use crate::file::Findings;
use crate::values;
use crate::ViolationKind;

/// The length at which writers truncate column index values by default; a value this long may
/// be a truncated one, whose last byte was changed.
const INDEX_TRUNCATION_BYTES: usize = 64;

/// Checks every string outside the rows of the string and binary columns not in
/// `flagged_columns`; returns how many such strings were examined.
pub(crate) fn check(
    reader: &SerializedFileReader<File>,
    flagged_columns: &HashSet<String>,
    f: &mut Findings,
) -> usize {
    let meta = reader.metadata();
    let mut examined = 0;
    for rg in 0..meta.num_row_groups() {
        let group = meta.row_group(rg);
        let index = meta.page_index_for_row_group(rg);
        for (ci, chunk) in group.columns().iter().enumerate() {
            let descr = chunk.column_descr();
            let fixed_len = match descr.physical_type() {
                PhysicalType::BYTE_ARRAY => None,
                PhysicalType::FIXED_LEN_BYTE_ARRAY => usize::try_from(descr.type_length()).ok(),
                _ => continue,
            };
            let column = chunk.column_path().string();
            if flagged_columns.contains(&column) {
                continue;
            }
            let mut hidden = Hidden {
                f,
                column: &column,
                examined: &mut examined,
            };

            if let Some(stats) = chunk.statistics() {
                hidden.statistics(stats, &format!("row group {rg} statistics"));
            }
            if let Some(
                ColumnIndexMetaData::BYTE_ARRAY(ix) | ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(ix),
            ) = index.column_index(ci)
            {
                for (page, (min, max)) in ix.min_values_iter().zip(ix.max_values_iter()).enumerate()
                {
                    for (which, value) in [("minimum", min), ("maximum", max)] {
                        if let Some(bytes) = value {
                            let exact = bytes.len() < INDEX_TRUNCATION_BYTES;
                            hidden.bytes(
                                bytes,
                                exact,
                                &format!("row group {rg} column index, page {page} {which}"),
                            );
                        }
                    }
                }
            }

            let pages = match reader
                .get_row_group(rg)
                .and_then(|g| g.get_column_page_reader(ci))
            {
                Ok(pages) => pages,
                Err(e) => {
                    hidden.unreadable(format!("cannot read the pages of row group {rg}: {e}"));
                    continue;
                }
            };
            for (page_no, page) in pages.enumerate() {
                match page {
                    Ok(Page::DictionaryPage {
                        buf,
                        num_values,
                        encoding,
                        ..
                    }) => hidden.dictionary(&buf, num_values, encoding, fixed_len, rg),
                    Ok(Page::DataPage {
                        statistics: Some(stats),
                        ..
                    })
                    | Ok(Page::DataPageV2 {
                        statistics: Some(stats),
                        ..
                    }) => hidden.statistics(
                        &stats,
                        &format!("row group {rg} page {page_no} header statistics"),
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        hidden.unreadable(format!("cannot read the pages of row group {rg}: {e}"));
                        break;
                    }
                }
            }
        }
    }
    examined
}

/// Reports for one column chunk.
struct Hidden<'f, 'a, 'c> {
    f: &'f mut Findings<'a>,
    column: &'c str,
    examined: &'c mut usize,
}

impl Hidden<'_, '_, '_> {
    fn statistics(&mut self, stats: &Statistics, place: &str) {
        if let Some(min) = stats.min_bytes_opt() {
            self.bytes(min, stats.min_is_exact(), &format!("{place} minimum"));
        }
        if let Some(max) = stats.max_bytes_opt() {
            self.bytes(max, stats.max_is_exact(), &format!("{place} maximum"));
        }
    }

    /// Checks one value. A value that may be truncated is checked without its last character:
    /// writers shorten long minimums and maximums and change the last byte of a maximum, which
    /// could turn `example.` into `example/`.
    fn bytes(&mut self, bytes: &[u8], exact: bool, place: &str) {
        *self.examined += 1;
        let text = String::from_utf8_lossy(bytes);
        let text = if exact {
            &text[..]
        } else {
            text.char_indices().last().map_or("", |(at, _)| &text[..at])
        };
        let found = values::inspect(text);
        if let Some(first) = found.first() {
            self.f.value(
                self.column,
                None,
                first.kind(),
                format!(
                    "the {place} holds a value that no row shows, and it {}",
                    values::describe_all(&found)
                ),
            );
        }
    }

    /// Every entry of a PLAIN-encoded dictionary page.
    fn dictionary(
        &mut self,
        buf: &[u8],
        num_values: u32,
        encoding: Encoding,
        fixed_len: Option<usize>,
        rg: usize,
    ) {
        if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
            self.unreadable(format!(
                "the dictionary page of row group {rg} uses {encoding:?} encoding, which this audit cannot read"
            ));
            return;
        }
        let entries = match fixed_len {
            Some(0) => Some(Vec::new()),
            Some(len) => Some(buf.chunks(len).collect()),
            None => plain_byte_arrays(buf),
        };
        match entries {
            Some(entries) if entries.len() == num_values as usize => {
                for (i, entry) in entries.into_iter().enumerate() {
                    self.bytes(entry, true, &format!("row group {rg} dictionary entry {i}"));
                }
            }
            _ => self.unreadable(format!(
                "the dictionary page of row group {rg} does not hold the {num_values} values it declares"
            )),
        }
    }

    fn unreadable(&mut self, message: String) {
        self.f
            .value(self.column, None, ViolationKind::Unreadable, message);
    }
}

/// Splits PLAIN-encoded byte arrays (a 4-byte little-endian length, then the bytes); `None` when
/// the buffer does not end on a value boundary.
fn plain_byte_arrays(mut buf: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (len, rest) = buf.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        out.push(value);
        buf = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_byte_arrays_are_split_on_their_lengths() {
        let mut buf = Vec::new();
        for value in ["US-VA", "", "bbc.co.uk"] {
            buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
            buf.extend_from_slice(value.as_bytes());
        }
        let values = plain_byte_arrays(&buf).unwrap();
        assert_eq!(values, [&b"US-VA"[..], b"", b"bbc.co.uk"]);
        assert_eq!(plain_byte_arrays(&buf[..buf.len() - 1]), None);
        assert_eq!(plain_byte_arrays(&[1, 0]), None);
        assert_eq!(plain_byte_arrays(&[]), Some(vec![]));
    }
}
