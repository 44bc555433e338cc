//! JSON text printed again in our layout without building it. A field a phase left
//! unread (see [`crate::engine::unread`]) is at scale a proposal pool of megabytes;
//! writing the state back used to parse it into script values only to print them.
//! Here serde_json's reader goes over the field's text and each token is written as
//! [`crate::engine::pretty`] writes the value a parse would have built: the same
//! string escapes, integers past `i64` as floats, floats through the same printer.
//! The one thing a parse changes that a token stream cannot follow is key order (a
//! parsed map is sorted, and keeps the last of duplicate keys): an object whose keys
//! are not strictly ascending makes the reprint give up, and the caller parses.
//! A property test holds the reprint to "parse, then print".

use crate::engine::pretty::{self, Layout};
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

/// Why a reprint gave up: the caller parses the text instead.
const OUT_OF_ORDER: &str = "object keys not strictly ascending";

/// Appends `text` (one JSON value) to `out` as [`pretty`] prints its parse at
/// `layout`; `false` (and `out` as it was) when it cannot (keys out of order, or not
/// one valid JSON value).
pub fn reprint(out: &mut String, text: &str, layout: Layout) -> bool {
    let start = out.len();
    let mut de = serde_json::Deserializer::from_str(text);
    let done = Reprint { out, layout }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if done.is_err() {
        out.truncate(start);
    }
    done.is_ok()
}

/// Where the value of each top-level field of a JSON object text is (the last
/// occurrence of a duplicate key, as a parse keeps it); `None` when the text is not
/// one JSON object.
pub fn top_level_ranges(text: &str) -> Option<HashMap<String, Range<usize>>> {
    struct Ranges<'t>(&'t str);
    impl<'de> Visitor<'de> for Ranges<'_> {
        type Value = HashMap<String, Range<usize>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
            let mut out = HashMap::new();
            let base = self.0.as_ptr() as usize;
            while let Some(key) = entries.next_key::<String>()? {
                let raw: &'de serde_json::value::RawValue = entries.next_value()?;
                let start = raw.get().as_ptr() as usize - base;
                out.insert(key, start..start + raw.get().len());
            }
            Ok(out)
        }
    }
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_str(text);
    let ranges = (&mut de).deserialize_map(Ranges(text)).ok()?;
    de.end().ok()?;
    Some(ranges)
}

/// Reads one value and writes it to `out` at `layout`.
struct Reprint<'o> {
    out: &'o mut String,
    layout: Layout,
}

impl<'de> DeserializeSeed<'de> for Reprint<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl Reprint<'_> {
    /// A scalar, written as the value a parse builds from it is written.
    fn scalar(self, value: rhai::Dynamic) {
        pretty::write_scalar(self.out, &value);
    }
}

impl<'de> Visitor<'de> for Reprint<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.out.push_str(itoa::Buffer::new().format(v));
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(crate::engine::doc::ScriptValue.visit_u64(v)?);
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(crate::engine::doc::ScriptValue.visit_f64(v)?);
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        pretty::write_str(self.out, v);
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.out.push_str("null");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (out, layout) = (self.out, self.layout);
        out.push('[');
        let mut first = true;
        loop {
            let mark = out.len();
            pretty::open_entry(out, first, layout);
            let item = Reprint {
                out: &mut *out,
                layout: pretty::deeper(layout),
            };
            if seq.next_element_seed(item)?.is_none() {
                out.truncate(mark);
                break;
            }
            first = false;
        }
        if first {
            out.push(']');
        } else {
            pretty::close(out, ']', layout);
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let (out, layout) = (self.out, self.layout);
        out.push('{');
        let mut last: Option<Cow<'de, str>> = None;
        while let Some(key) = entries.next_key_seed(KeyText)? {
            if last.as_ref().is_some_and(|l| l.as_ref() >= key.as_ref()) {
                return Err(A::Error::custom(OUT_OF_ORDER));
            }
            pretty::open_entry(out, last.is_none(), layout);
            pretty::write_str(out, &key);
            out.push_str(if layout.is_some() { ": " } else { ":" });
            entries.next_value_seed(Reprint {
                out: &mut *out,
                layout: pretty::deeper(layout),
            })?;
            last = Some(key);
        }
        if last.is_none() {
            out.push('}');
        } else {
            pretty::close(out, '}', layout);
        }
        Ok(())
    }
}

/// A key's text, borrowed from the document when it has no escapes.
struct KeyText;

impl<'de> DeserializeSeed<'de> for KeyText {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyText {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::doc::parse_json;
    use crate::engine::json_text::strategies::json_values;
    use proptest::prelude::*;

    /// What a parse then a print gives, at `layout`.
    fn parse_then_print(text: &str, layout: Layout) -> String {
        let value = parse_json(text).expect("parses");
        match layout {
            Some(depth) => pretty::pretty_at(&value, depth, &mut true).expect("prints"),
            None => pretty::compact(&value).expect("prints"),
        }
    }

    proptest! {
        #[test]
        fn reprints_what_a_parse_then_a_print_gives(v in json_values(), depth in 0usize..4) {
            // Our own layout, serde's compact one, and serde's pretty one as input.
            for text in [
                serde_json::to_string(&v).unwrap(),
                serde_json::to_string_pretty(&v).unwrap(),
            ] {
                for layout in [Some(depth), None] {
                    let mut out = String::from("prefix");
                    prop_assert!(reprint(&mut out, &text, layout));
                    prop_assert_eq!(&out["prefix".len()..], parse_then_print(&text, layout));
                }
            }
        }
    }

    #[test]
    fn tokens_a_parse_changes_are_written_as_the_parse_writes_them() {
        let text = r#" { "a" : [ 1.0e2, -0, -0.0, 18446744073709551615, "\u00e9\/\t" ],
                        "b": { }, "c": [ ], "d\n": null, "e": true } "#;
        let mut out = String::new();
        assert!(reprint(&mut out, text, Some(1)));
        assert_eq!(out, parse_then_print(text, Some(1)));
        assert!(out.contains("100.0"), "{out}");
        assert!(out.contains("1.8446744073709552e"), "{out}");
    }

    #[test]
    fn keys_out_of_order_or_twice_or_bad_text_give_up_and_leave_the_output_alone() {
        for text in [
            r#"{"b": 1, "a": 2}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"[{"x": {"z": 1, "y": 2}}]"#,
            r#"{"a": 1"#,
            r#"{"a": 1} x"#,
        ] {
            let mut out = String::from("kept");
            assert!(!reprint(&mut out, text, Some(0)), "{text}");
            assert_eq!(out, "kept");
        }
    }

    #[test]
    fn top_level_ranges_find_each_field_and_the_last_of_a_duplicate() {
        let text = r#"{"a": [1, {"b": "}"}], "c" : "x\"y", "a": {"z": null}}"#;
        let ranges = top_level_ranges(text).expect("an object");
        assert_eq!(&text[ranges["a"].clone()], r#"{"z": null}"#);
        assert_eq!(&text[ranges["c"].clone()], r#""x\"y""#);
        assert_eq!(top_level_ranges("[1]"), None);
        assert_eq!(top_level_ranges(r#"{"a": 1"#), None);
    }
}
