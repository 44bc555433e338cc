//! Pretty JSON assembled from pieces printed apart. A large value (a proposal
//! pool) is printed once, then placed in the state file, in the handoff's
//! state patch and, compacted, in the journal: copies of its text instead of
//! walks of the value. A piece carries the depth it was printed at; placed
//! deeper, its later lines gain the indentation they lack. The assembled text
//! is byte for byte what `serde_json::to_string_pretty` prints for the whole.

/// A value's pretty text as printed `depth` levels deep (its later lines indented for
/// that depth; serde_json prints a whole document at depth 0).
#[derive(Debug, Clone, Copy)]
pub struct Piece<'a> {
    /// The text, without a final newline.
    pub text: &'a str,
    /// The depth it was printed at.
    pub depth: usize,
}

impl<'a> Piece<'a> {
    /// A text printed as a whole document.
    pub fn top(text: &'a str) -> Self {
        Self { text, depth: 0 }
    }
}

/// An object entry's value: a printed text, a value printed where it goes, or an
/// object of those written in place (one pass over its texts instead of two).
#[derive(Debug, Clone)]
pub enum Entry<'a> {
    /// A value printed already.
    Text(Piece<'a>),
    /// A value printed straight into the text, at the depth it goes (a pool printed
    /// for this text only is not printed apart, then copied).
    Value(&'a rhai::Dynamic),
    /// An object whose entries are printed already or printed in place.
    Object(Vec<(&'a str, Entry<'a>)>),
}

/// The pretty text of an object whose entries are `(key, value's text)`, in the order
/// given (callers give them sorted, as serde_json prints a map).
pub fn object<'a>(entries: impl IntoIterator<Item = (&'a str, Piece<'a>)>) -> String {
    let mut out = String::new();
    let entries = entries.into_iter().map(|(k, v)| (k, Entry::Text(v)));
    // Texts only: nothing is printed, so nothing can fail.
    let _ = push_object(&mut out, entries.collect(), 0);
    out
}

/// Appends [`object`]'s text as it reads `depth` levels deep in a larger text; the
/// ranges of `out` its entries' values took, in order. Fails only when a value printed
/// in place cannot be printed.
pub fn push_object(
    out: &mut String,
    entries: Vec<(&str, Entry)>,
    depth: usize,
) -> Result<Vec<std::ops::Range<usize>>, String> {
    let pad = "  ".repeat(depth + 1);
    let mut ranges = Vec::new();
    out.push('{');
    for (key, value) in entries {
        out.push_str(if ranges.is_empty() { "\n" } else { ",\n" });
        out.push_str(&pad);
        crate::engine::pretty::write_str(out, key);
        out.push_str(": ");
        let start = out.len();
        match value {
            Entry::Text(piece) => push_value(out, piece, depth + 1),
            Entry::Value(value) => {
                crate::engine::pretty::write_value(out, value, Some(depth + 1), &mut true)?
            }
            Entry::Object(inner) => {
                push_object(out, inner, depth + 1)?;
            }
        }
        ranges.push(start..out.len());
    }
    if !ranges.is_empty() {
        out.push('\n');
        out.push_str(&pad[2..]);
    }
    out.push('}');
    Ok(ranges)
}

/// Appends `value` as it reads `depth` levels deep in a larger text (a text printed
/// deeper than that is not expected, and is copied as it is).
pub fn push_value(out: &mut String, value: Piece, depth: usize) {
    match depth.checked_sub(value.depth) {
        Some(levels) if levels > 0 => push_indented(out, value.text, &"  ".repeat(levels)),
        _ => out.push_str(value.text),
    }
}

/// Appends `text` deeper by `pad`: in pretty JSON a line break is only ever layout
/// (one inside a string is written `\n`), so each one is followed by `pad`.
fn push_indented(out: &mut String, text: &str, pad: &str) {
    out.reserve(text.len() + text.len() / 8);
    let mut from = 0;
    for at in memchr::memchr_iter(b'\n', text.as_bytes()) {
        out.push_str(&text[from..=at]);
        out.push_str(pad);
        from = at + 1;
    }
    out.push_str(&text[from..]);
}

/// The compact text of pretty JSON `text` (as `serde_json::to_string` prints the value):
/// the spaces and line breaks outside strings go.
pub fn compact(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' {
            // A string, copied whole: it ends at the first quote not escaped.
            let mut end = i + 1;
            while let Some(at) = bytes
                .get(end..)
                .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
            {
                end += at;
                if bytes[end] == b'\\' {
                    end += 2;
                } else {
                    break;
                }
            }
            let end = (end + 1).min(bytes.len());
            out.extend_from_slice(&bytes[i..end]);
            i = end;
        } else {
            if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                out.push(b);
            }
            i += 1;
        }
    }
    // Bytes are copied whole and only ASCII layout is dropped: still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Generators for the property tests of JSON text.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;
    use serde_json::Value;

    /// JSON values of a few levels, with keys and strings that need every kind of escape.
    pub fn json_values() -> impl Strategy<Value = Value> {
        let text = "[a-z \"\\\\\n\r\t\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}/{}:,\\[\\]é😀]{0,8}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(text, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::json_values;
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn pretty(v: &Value) -> String {
        serde_json::to_string_pretty(v).unwrap()
    }

    proptest! {
        #[test]
        fn an_object_assembled_from_its_entries_prints_as_the_whole(v in json_values()) {
            let Value::Object(map) = json!({"k": v.clone(), "a \"b\"\n": [v.clone()], "z": {}}) else {
                unreachable!()
            };
            let texts: Vec<(String, String)> = map.iter().map(|(k, v)| (k.clone(), pretty(v))).collect();
            let assembled = object(texts.iter().map(|(k, t)| (k.as_str(), Piece::top(t))));
            prop_assert_eq!(assembled, pretty(&Value::Object(map)));
        }

        #[test]
        fn compact_text_is_what_serde_json_prints_compactly(v in json_values()) {
            prop_assert_eq!(compact(&pretty(&v)), serde_json::to_string(&v).unwrap());
        }
    }

    #[test]
    fn a_broken_text_is_compacted_without_a_panic() {
        assert_eq!(compact("[\"a\\"), "[\"a\\");
        assert_eq!(compact("\"a\\\""), "\"a\\\"");
    }

    #[test]
    fn an_object_placed_deeper_reads_as_printed_there() {
        let list = Piece::top("[\n  1\n]");
        let deeper = Piece {
            text: "[\n      1\n    ]",
            depth: 2,
        };
        let inner = object([("a", list), ("b", Piece::top("{}"))]);
        let mut outer = String::from("{\n  \"x\": ");
        let entries = vec![
            ("a", Entry::Text(list)),
            ("b", Entry::Text(Piece::top("{}"))),
        ];
        let ranges = push_object(&mut outer, entries, 1).unwrap();
        assert_eq!(&outer[ranges[0].clone()], "[\n      1\n    ]");
        outer.push_str(",\n  \"y\": ");
        // A value printed in place, at the depth it goes.
        let value = crate::engine::doc::from_json(&json!([2, {"k": [3]}]));
        let inner_entries = vec![("b", Entry::Text(deeper)), ("c", Entry::Value(&value))];
        push_object(&mut outer, vec![("a", Entry::Object(inner_entries))], 1).unwrap();
        outer.push_str("\n}");
        let expected =
            json!({"x": {"a": [1], "b": {}}, "y": {"a": {"b": [1], "c": [2, {"k": [3]}]}}});
        assert_eq!(outer, pretty(&expected));
        assert_eq!(inner, pretty(&expected["x"]));
    }

    #[test]
    fn an_empty_object_is_two_braces() {
        assert_eq!(object([]), "{}");
        assert_eq!(object([("a", Piece::top("[]"))]), pretty(&json!({"a": []})));
    }
}
