//! JSON of script values, written straight into a string: pretty (states,
//! handoffs, task files) or compact (values quoted in messages). States and
//! handoffs of a large campaign are megabytes of proposals; going through
//! serde's serializer, value by value, into an `io::Write` took most of a
//! step's printing. The text is byte for byte what `serde_json` writes for
//! the same JSON (pretty: two-space indent and `": "`; its string escapes,
//! `itoa` integers and `zmij` floats, `null` for a non-finite float); property
//! tests hold the two together.

use crate::engine::unread;
use rhai::{Array, Dynamic, ImmutableString, Map};

/// Pretty JSON of `value` (no final newline); `faithful` turns false when a value will
/// not come back from the text (see [`crate::engine::doc::Printed::faithful`]).
pub fn pretty(value: &Dynamic, faithful: &mut bool) -> Result<String, String> {
    pretty_at(value, 0, faithful)
}

/// [`pretty`], printed as it reads `depth` levels deep in a larger text.
pub fn pretty_at(value: &Dynamic, depth: usize, faithful: &mut bool) -> Result<String, String> {
    let mut out = String::new();
    write_value(&mut out, value, Some(depth), faithful)?;
    Ok(out)
}

/// Compact JSON of `value`, as `serde_json::to_string` prints the same JSON.
pub fn compact(value: &Dynamic) -> Result<String, String> {
    let mut out = String::new();
    write_value(&mut out, value, None, &mut true)?;
    Ok(out)
}

/// Where a value is written: `Some(depth)`, pretty at that depth; `None`, compact.
pub type Layout = Option<usize>;

/// Opens the entry of a map or list (its first when `first`), one level below `layout`.
pub(crate) fn open_entry(out: &mut String, first: bool, layout: Layout) {
    if !first {
        out.push(',');
    }
    if let Some(depth) = layout {
        out.push('\n');
        indent(out, depth + 1);
    }
}

/// Closes a non-empty map or list written at `layout` with `bracket`.
pub(crate) fn close(out: &mut String, bracket: char, layout: Layout) {
    if let Some(depth) = layout {
        out.push('\n');
        indent(out, depth);
    }
    out.push(bracket);
}

/// The layout one level below `layout`.
pub(crate) fn deeper(layout: Layout) -> Layout {
    layout.map(|d| d + 1)
}

/// Spaces for the usual depths, pushed in one piece.
const SPACES: &str = "                                                                ";

fn indent(out: &mut String, depth: usize) {
    match SPACES.get(..2 * depth) {
        Some(pad) => out.push_str(pad),
        None => (0..depth).for_each(|_| out.push_str("  ")),
    }
}

/// The ranges of a text its top-level values took: `(key, bytes)`.
pub type FieldRanges = Vec<(String, std::ops::Range<usize>)>;

/// [`pretty`] of a map, with the bytes each of its values took (`None`: not a map).
pub fn pretty_fields(
    value: &Dynamic,
    faithful: &mut bool,
) -> Result<Option<(String, FieldRanges)>, String> {
    let Some(m) = value.read_lock::<Map>() else {
        return Ok(None);
    };
    let mut out = String::new();
    let mut ranges = Vec::with_capacity(m.len());
    write_map(&mut out, &m, Some(0), faithful, Some(&mut ranges))?;
    Ok(Some((out, ranges)))
}

/// Writes map `m` at `layout`, noting in `ranges` where each value went.
fn write_map(
    out: &mut String,
    m: &Map,
    layout: Layout,
    faithful: &mut bool,
    mut ranges: Option<&mut FieldRanges>,
) -> Result<(), String> {
    if m.is_empty() {
        out.push_str("{}");
        return Ok(());
    }
    out.push('{');
    for (i, (k, v)) in m.iter().enumerate() {
        open_entry(out, i == 0, layout);
        write_str(out, k.as_str());
        out.push_str(if layout.is_some() { ": " } else { ":" });
        let start = out.len();
        write_value(out, v, deeper(layout), faithful)?;
        if let Some(ranges) = ranges.as_deref_mut() {
            ranges.push((k.to_string(), start..out.len()));
        }
    }
    close(out, '}', layout);
    Ok(())
}

/// Writes `value` at `layout`; `faithful` turns false when it will not read back as it is.
pub(crate) fn write_value(
    out: &mut String,
    value: &Dynamic,
    layout: Layout,
    faithful: &mut bool,
) -> Result<(), String> {
    if let Some(s) = value.read_lock::<ImmutableString>() {
        write_str(out, s.as_str());
        return Ok(());
    }
    if let Ok(i) = value.as_int() {
        out.push_str(itoa::Buffer::new().format(i));
        return Ok(());
    }
    if let Some(m) = value.read_lock::<Map>() {
        return write_map(out, &m, layout, faithful, None);
    }
    if let Some(a) = value.read_lock::<Array>() {
        if a.is_empty() {
            out.push_str("[]");
            return Ok(());
        }
        out.push('[');
        for (i, v) in a.iter().enumerate() {
            open_entry(out, i == 0, layout);
            write_value(out, v, deeper(layout), faithful)?;
        }
        close(out, ']', layout);
        return Ok(());
    }
    if value.is_unit() {
        out.push_str("null");
        return Ok(());
    }
    if let Ok(b) = value.as_bool() {
        out.push_str(if b { "true" } else { "false" });
        return Ok(());
    }
    if let Ok(f) = value.as_float() {
        if f.is_finite() {
            out.push_str(zmij::Buffer::new().format_finite(f));
        } else {
            *faithful = false;
            out.push_str("null");
        }
        return Ok(());
    }
    if unread::may_be_unread(value)
        && let Some(field) = value.read_lock::<unread::Unread>()
    {
        // Its text printed again, not parsed (see `reprint`); parsed when that gives up.
        if field.reprint(out, layout, faithful) {
            return Ok(());
        }
        return write_value(out, &field.value()?, layout, faithful);
    }
    // Anything else (a character, a function pointer, ...) prints as serde_json prints
    // it, and does not come back as it was.
    *faithful = false;
    let Some(depth) = layout else {
        out.push_str(&serde_json::to_string(value).map_err(|e| e.to_string())?);
        return Ok(());
    };
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    let mut lines = text.split('\n');
    out.push_str(lines.next().unwrap_or_default());
    for line in lines {
        out.push('\n');
        indent(out, depth);
        out.push_str(line);
    }
    Ok(())
}

/// Appends scalar `value` as it is printed anywhere (a container: as compact JSON).
pub(crate) fn write_scalar(out: &mut String, value: &Dynamic) {
    // Scalars print at any layout and always come back.
    let _ = write_value(out, value, None, &mut true);
}

/// The two-character escape serde_json writes for control character `b`, if it has one
/// (the others are written `\u00xx`).
pub(crate) fn short_escape(b: u8) -> Option<&'static str> {
    match b {
        b'\n' => Some("\\n"),
        b'\r' => Some("\\r"),
        b'\t' => Some("\\t"),
        0x08 => Some("\\b"),
        0x0c => Some("\\f"),
        _ => None,
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
pub fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = s.as_bytes();
    // Most strings need no escape: one pass that the compiler vectorises.
    if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x00..=0x1f => short_escape(b).unwrap_or_default(),
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::doc::from_json;
    use crate::engine::json_text::strategies::json_values;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prints_what_serde_json_prints(v in json_values()) {
            let mut faithful = true;
            let text = pretty(&from_json(&v), &mut faithful).unwrap();
            prop_assert_eq!(&text, &serde_json::to_string_pretty(&v).unwrap());
            prop_assert!(faithful);
            prop_assert_eq!(compact(&from_json(&v)).unwrap(), serde_json::to_string(&v).unwrap());
            // A map's fields are where the whole text says they are.
            if let Some((whole, ranges)) = pretty_fields(&from_json(&v), &mut faithful).unwrap() {
                prop_assert_eq!(&whole, &text);
                for (key, range) in ranges {
                    let field = pretty_at(&from_json(&v[key.as_str()]), 1, &mut faithful).unwrap();
                    prop_assert_eq!(&whole[range], field.as_str());
                }
            }
            // Printed deeper, it reads as the same text placed there.
            let deeper = pretty_at(&from_json(&v), 3, &mut faithful).unwrap();
            prop_assert_eq!(deeper, text.replace('\n', "\n      "));
        }
    }

    #[test]
    fn values_that_do_not_come_back_are_noted_and_printed_as_serde_json_prints_them() {
        let mut map = Map::new();
        map.insert("nan".into(), Dynamic::from_float(f64::NAN));
        map.insert("c".into(), Dynamic::from_char('x'));
        map.insert("list".into(), Dynamic::from_array(vec![Dynamic::from('y')]));
        let value = Dynamic::from_map(map);
        let mut faithful = true;
        let text = pretty(&value, &mut faithful).unwrap();
        assert!(!faithful);
        let json = crate::engine::doc::to_json(&value);
        assert_eq!(text, serde_json::to_string_pretty(&json).unwrap());
        assert_eq!(
            compact(&value).unwrap(),
            serde_json::to_string(&json).unwrap()
        );
    }
}
