//! Pretty JSON assembled from pieces printed apart. A large value (a proposal
//! pool) is printed once, then placed in the state file, in the handoff's
//! state patch and, compacted, in the journal: three copies of the text
//! instead of three walks of the value. The pieces are what
//! `serde_json::to_string_pretty` prints (two-space indent, no final
//! newline), and the assembled text is byte for byte what it prints for the
//! whole.

/// The pretty text of an object whose entries are `(key, value's pretty text)`, in the
/// order given (callers give them sorted, as serde_json prints a map).
pub fn object<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    push_object(&mut out, entries, 0);
    out
}

/// Appends [`object`]'s text as it reads `depth` levels deep in a larger text.
pub fn push_object<'a>(
    out: &mut String,
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    depth: usize,
) {
    let pad = "  ".repeat(depth + 1);
    out.push('{');
    let mut empty = true;
    for (key, value) in entries {
        out.push_str(if empty { "\n" } else { ",\n" });
        out.push_str(&pad);
        empty = false;
        push_key(out, key);
        out.push_str(": ");
        push_indented(out, value, &pad);
    }
    if !empty {
        out.push('\n');
        out.push_str(&pad[2..]);
    }
    out.push('}');
}

/// Appends pretty text `value` as it reads `depth` levels deep in a larger text.
pub fn push_value(out: &mut String, value: &str, depth: usize) {
    push_indented(out, value, &"  ".repeat(depth));
}

/// Appends `key` as a JSON string.
fn push_key(out: &mut String, key: &str) {
    // A string always prints.
    out.push_str(&serde_json::to_string(key).unwrap_or_default());
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn pretty(v: &Value) -> String {
        serde_json::to_string_pretty(v).unwrap()
    }

    /// JSON values of a few levels, with keys and strings that need escaping.
    fn values() -> impl Strategy<Value = Value> {
        let text = "[a-z \"\\\\\n\t{}:,\\[\\]é]{0,8}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
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

    proptest! {
        #[test]
        fn an_object_assembled_from_its_entries_prints_as_the_whole(v in values()) {
            let Value::Object(map) = json!({"k": v.clone(), "a \"b\"\n": [v.clone()], "z": {}}) else {
                unreachable!()
            };
            let texts: Vec<(String, String)> = map.iter().map(|(k, v)| (k.clone(), pretty(v))).collect();
            let assembled = object(texts.iter().map(|(k, t)| (k.as_str(), t.as_str())));
            prop_assert_eq!(assembled, pretty(&Value::Object(map)));
        }

        #[test]
        fn compact_text_is_what_serde_json_prints_compactly(v in values()) {
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
        let inner = object([("a", "[\n  1\n]"), ("b", "{}")]);
        let mut outer = String::from("{\n  \"x\": ");
        push_object(&mut outer, [("a", "[\n  1\n]"), ("b", "{}")], 1);
        outer.push_str("\n}");
        let expected = json!({"x": {"a": [1], "b": {}}});
        assert_eq!(outer, pretty(&expected));
        assert_eq!(inner, pretty(&expected["x"]));
    }

    #[test]
    fn an_empty_object_is_two_braces() {
        assert_eq!(object([]), "{}");
        assert_eq!(object([("a", "[]")]), pretty(&json!({"a": []})));
    }
}
