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
    let mut out = String::from("{");
    let mut empty = true;
    for (key, value) in entries {
        out.push_str(if empty { "\n  " } else { ",\n  " });
        empty = false;
        push_key(&mut out, key);
        out.push_str(": ");
        push_indented(&mut out, value);
    }
    if !empty {
        out.push('\n');
    }
    out.push('}');
    out
}

/// Appends `key` as a JSON string.
fn push_key(out: &mut String, key: &str) {
    // A string always prints.
    out.push_str(&serde_json::to_string(key).unwrap_or_default());
}

/// Appends `text` one level deeper: in pretty JSON a line break is only ever layout
/// (one inside a string is written `\n`), so each one gains two spaces.
fn push_indented(out: &mut String, text: &str) {
    out.reserve(text.len());
    let mut lines = text.split('\n');
    if let Some(first) = lines.next() {
        out.push_str(first);
    }
    for line in lines {
        out.push_str("\n  ");
        out.push_str(line);
    }
}

/// The compact text of pretty JSON `text` (as `serde_json::to_string` prints the value):
/// the spaces and line breaks outside strings go.
pub fn compact(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
            out.push(b);
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
    fn an_empty_object_is_two_braces() {
        assert_eq!(object([]), "{}");
        assert_eq!(object([("a", "[]")]), pretty(&json!({"a": []})));
    }
}
