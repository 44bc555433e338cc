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

/// Whether `text`, one valid JSON value, is already what [`reprint`] writes for it at
/// `depth` in the pretty layout: then it is copied as it is. Our own files are (a state
/// written by a step holds its pools at depth 1), and checking is a scan, not a parse:
/// the layout of each line, keys strictly ascending, string escapes serde_json's own,
/// and numbers in the form their parse prints. Anything else answers `false`.
pub fn is_canonical(text: &str, depth: usize) -> bool {
    let mut scan = Canonical {
        bytes: text.as_bytes(),
        at: 0,
    };
    scan.value(depth) && scan.at == text.len()
}

/// A scan of a text for [`is_canonical`].
struct Canonical<'t> {
    bytes: &'t [u8],
    at: usize,
}

impl<'t> Canonical<'t> {
    fn value(&mut self, depth: usize) -> bool {
        match self.bytes.get(self.at) {
            Some(b'"') => self.string().is_some(),
            Some(b'[') => self.list(depth),
            Some(b'{') => self.object(depth),
            Some(b't') => self.word(b"true"),
            Some(b'f') => self.word(b"false"),
            Some(b'n') => self.word(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    /// Steps over `expected` when the text goes on with it.
    fn word(&mut self, expected: &[u8]) -> bool {
        let found = self.bytes[self.at..].starts_with(expected);
        if found {
            self.at += expected.len();
        }
        found
    }

    /// A line break and the indent of `depth`.
    fn line(&mut self, depth: usize) -> bool {
        let end = self.at + 1 + 2 * depth;
        let found = self
            .bytes
            .get(self.at..end)
            .is_some_and(|l| l[0] == b'\n' && all_spaces(&l[1..]));
        if found {
            self.at = end;
        }
        found
    }

    /// A string whose escapes are serde_json's; its raw content, and whether it holds
    /// an escape.
    fn string(&mut self) -> Option<(&'t [u8], bool)> {
        let start = self.at + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            i += memchr::memchr2(b'"', b'\\', self.bytes.get(i..)?)?;
            if self.bytes[i] == b'"' {
                break;
            }
            escaped = true;
            match self.bytes.get(i + 1)? {
                b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f' => i += 2,
                b'u' => {
                    // `\u00xx`, lowercase, for a control character with no short escape.
                    let code = self.bytes.get(i + 2..i + 6)?;
                    let hex = |c: u8| match c {
                        b'0'..=b'9' => Some(c - b'0'),
                        b'a'..=b'f' => Some(c - b'a' + 10),
                        _ => None,
                    };
                    let low = hex(code[3])?;
                    let value = match &code[..3] {
                        b"000" => low,
                        b"001" => 16 + low,
                        _ => return None,
                    };
                    if pretty::short_escape(value).is_some() {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            }
        }
        self.at = i + 1;
        Some((&self.bytes[start..i], escaped))
    }

    /// A number in the form its parse prints: an `i64` as itoa prints it, any other
    /// number as the float printer prints its value.
    fn number(&mut self) -> bool {
        let rest = &self.bytes[self.at..];
        let len = rest
            .iter()
            .position(|c| !matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
            .unwrap_or(rest.len());
        // An integer of up to 18 digits is an `i64` itoa prints as it is written unless
        // it has a leading zero or is `-0`.
        let (sign, digits) = match rest[..len].split_first() {
            Some((b'-', digits)) => (true, digits),
            _ => (false, &rest[..len]),
        };
        if (1..=18).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
            self.at += len;
            let zero = digits[0] == b'0';
            return if zero {
                digits.len() == 1 && !sign
            } else {
                true
            };
        }
        let Ok(token) = std::str::from_utf8(&rest[..len]) else {
            return false;
        };
        self.at += len;
        if token.contains(['.', 'e', 'E']) {
            token
                .parse::<f64>()
                .is_ok_and(|f| f.is_finite() && zmij::Buffer::new().format_finite(f) == token)
        } else {
            token
                .parse::<i64>()
                .is_ok_and(|i| itoa::Buffer::new().format(i) == token)
        }
    }

    fn list(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.word(b"]") {
            return true;
        }
        loop {
            if !(self.line(depth + 1) && self.value(depth + 1)) {
                return false;
            }
            if !self.word(b",") {
                return self.line(depth) && self.word(b"]");
            }
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.word(b"}") {
            return true;
        }
        let mut last: Option<&[u8]> = None;
        loop {
            if !(self.line(depth + 1) && self.bytes.get(self.at) == Some(&b'"')) {
                return false;
            }
            // A key with an escape is compared as the reprint compares it (decoded).
            let Some((key, false)) = self.string() else {
                return false;
            };
            if last.is_some_and(|l| !ascending(l, key)) {
                return false;
            }
            last = Some(key);
            if !(self.word(b": ") && self.value(depth + 1)) {
                return false;
            }
            if !self.word(b",") {
                return self.line(depth) && self.word(b"}");
            }
        }
    }
}

/// Whether `pad` is all spaces, eight bytes at a time (an indent is checked on every
/// line of a pool: a `memcmp` call each was a tenth of a large merge).
pub(crate) fn all_spaces(pad: &[u8]) -> bool {
    const SPACES: u64 = u64::from_ne_bytes([b' '; 8]);
    let mut chunks = pad.chunks_exact(8);
    chunks.all(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) == SPACES)
        && chunks.remainder().iter().all(|&c| c == b' ')
}

/// Whether `before < after`, byte by byte (keys are short and differ early: no
/// `memcmp` call).
fn ascending(before: &[u8], after: &[u8]) -> bool {
    for (a, b) in before.iter().zip(after) {
        if a != b {
            return a < b;
        }
    }
    before.len() < after.len()
}

/// Where the value of each top-level field of a JSON object text is (the last
/// occurrence of a duplicate key, as a parse keeps it); `None` when the text is not one
/// JSON object. A byte scan for a text that parsed already (an unread field's
/// document): strings are skipped to their closing quote and brackets counted, without
/// going through a parser.
pub fn top_level_ranges(text: &str) -> Option<HashMap<String, Range<usize>>> {
    ranges_from_key_places(text, &top_level_key_places(text)?)
}

/// Where each top-level key of an object text starts (its opening quote), found by
/// stepping over each value; `None` when the text is not one JSON object.
fn top_level_key_places(text: &str) -> Option<Vec<usize>> {
    let bytes = text.as_bytes();
    let mut at = space(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = space(bytes, at + 1);
    let mut places = Vec::new();
    if bytes.get(at) == Some(&b'}') {
        return (space(bytes, at + 1) == bytes.len()).then_some(places);
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        places.push(at);
        at = space(bytes, string_end(bytes, at)?);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let end = value_end(bytes, space(bytes, at + 1))?;
        at = space(bytes, end);
        match bytes.get(at)? {
            b',' => at = space(bytes, at + 1),
            b'}' => return (space(bytes, at + 1) == bytes.len()).then_some(places),
            _ => return None,
        }
    }
}

/// [`top_level_ranges`] of an object text, from where its top-level keys start (their
/// opening quotes, in order, as a parse or [`top_level_key_places`] found them): each value runs
/// from after its key's colon to the comma before the next key, or to the closing
/// brace. Only the bytes between the fields are looked at, not the values (a pool is
/// 10 MB). `None` when the places do not fit the text.
pub fn ranges_from_key_places(
    text: &str,
    places: &[usize],
) -> Option<HashMap<String, Range<usize>>> {
    let bytes = text.as_bytes();
    let mut out = HashMap::with_capacity(places.len());
    for (i, &at) in places.iter().enumerate() {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(bytes, at)?;
        let key: String = serde_json::from_str(&text[at..key_end]).ok()?;
        let colon = space(bytes, key_end);
        if bytes.get(colon) != Some(&b':') {
            return None;
        }
        let start = space(bytes, colon + 1);
        let end = match places.get(i + 1) {
            Some(&next) if next > bytes.len() => return None,
            Some(&next) => {
                let comma = back_space(bytes, next).checked_sub(1)?;
                (bytes.get(comma) == Some(&b',')).then(|| back_space(bytes, comma))?
            }
            None => {
                let close = back_space(bytes, bytes.len()).checked_sub(1)?;
                (bytes.get(close) == Some(&b'}')).then(|| back_space(bytes, close))?
            }
        };
        if end < start {
            return None;
        }
        out.insert(key, start..end);
    }
    Some(out)
}

/// The position after the last byte before `at` that is not JSON whitespace.
fn back_space(bytes: &[u8], mut at: usize) -> usize {
    while at > 0 && matches!(bytes[at - 1], b' ' | b'\n' | b'\r' | b'\t') {
        at -= 1;
    }
    at
}

/// The first position from `at` that is not JSON whitespace.
fn space(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        at += 1;
    }
    at
}

/// The position after the string that starts (with its quote) at `at`.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// The position after the value that starts at `at`.
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let rest = &bytes[at..];
            let len = rest
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                .unwrap_or(rest.len());
            (len > 0).then_some(at + len)
        }
    }
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

    /// The places of the top-level keys of `text` as its parse finds them.
    fn key_places(text: &str) -> Option<Vec<usize>> {
        struct Skip;
        impl<'de> crate::engine::doc::TopLevelFields<'de> for Skip {
            fn read<A: serde::de::MapAccess<'de>>(
                &self,
                _: &str,
                entries: &mut A,
            ) -> Result<Option<rhai::Dynamic>, A::Error> {
                entries.next_value::<serde::de::IgnoredAny>().map(|_| None)
            }
        }
        let (_, places) = crate::engine::doc::parse_top_level_placed(text, Skip).ok()?;
        places
    }

    proptest! {
        #[test]
        fn ranges_from_key_places_are_the_scanned_ones(
            fields in proptest::collection::vec(("[a-z]{0,3}", json_values()), 0..5),
            pretty in any::<bool>(),
        ) {
            // Objects with repeated keys too (the last one counts, as in a parse).
            let mut text = String::from("{");
            for (i, (key, value)) in fields.iter().enumerate() {
                let value = if pretty {
                    serde_json::to_string_pretty(value).unwrap()
                } else {
                    serde_json::to_string(value).unwrap()
                };
                let sep = if i == 0 { "\n  " } else if pretty { ",\n  " } else { " , " };
                text.push_str(&format!("{sep}{}: {value}", serde_json::to_string(key).unwrap()));
            }
            text.push_str(" \n}\n");
            let places = key_places(&text).expect("no escaped key");
            prop_assert_eq!(ranges_from_key_places(&text, &places), top_level_ranges(&text));
        }
    }

    #[test]
    fn an_escaped_key_leaves_no_places_and_a_place_off_a_quote_gives_none() {
        assert_eq!(key_places(r#"{"a\u0062": 1}"#), None);
        assert_eq!(key_places("[1]"), None);
        let text = r#"{"a": [1, {"b": 2}], "c": "d"}"#;
        let places = key_places(text).unwrap();
        assert_eq!(places, vec![1, 21]);
        assert_eq!(
            ranges_from_key_places(text, &places),
            top_level_ranges(text)
        );
        assert_eq!(ranges_from_key_places(text, &[2]), None, "not a quote");
        assert_eq!(
            ranges_from_key_places(text, &[1, 12]),
            None,
            "a place inside a value"
        );
        assert_eq!(ranges_from_key_places(text, &[1, 99]), None, "past the end");
    }

    proptest! {
        #[test]
        fn a_text_found_canonical_is_its_own_reprint(v in json_values(), depth in 0usize..4) {
            let ours = pretty::pretty_at(&crate::engine::doc::from_json(&v), depth, &mut true).unwrap();
            // (A key with an escape is left to the reprint, which compares it decoded.)
            let escaped_key = ours.lines().any(|l| l.trim_start().starts_with('"') && l.contains("\\") && l.contains("\": "));
            prop_assert!(escaped_key || is_canonical(&ours, depth), "our own print is canonical: {}", ours);
            for text in [
                ours.clone(),
                serde_json::to_string(&v).unwrap(),
                serde_json::to_string_pretty(&v).unwrap(),
                ours.replace('\n', "\n "),
            ] {
                if is_canonical(&text, depth) {
                    let mut out = String::new();
                    prop_assert!(reprint(&mut out, &text, Some(depth)));
                    prop_assert_eq!(out, text);
                }
            }
        }
    }

    #[test]
    fn texts_a_parse_would_print_otherwise_are_not_canonical() {
        for (text, canonical) in [
            (
                "{\n  \"a\": [\n    1,\n    2.5,\n    \"x\\ny\"\n  ],\n  \"b\": {}\n}",
                true,
            ),
            ("{\n  \"b\": 1,\n  \"a\": 2\n}", false),
            ("{\n  \"a\": 1,\n  \"a\": 2\n}", false),
            ("{\"a\": 1}", false),
            ("{\n   \"a\": 1\n}", false),
            ("[\n  1.0e2\n]", false),
            ("[\n  -0\n]", false),
            ("[\n  0,\n  -7,\n  120,\n  -999999999999999999\n]", true),
            ("[\n  007\n]", false),
            ("[\n  -01\n]", false),
            ("[\n  9223372036854775807\n]", true),
            ("[\n  9223372036854775808\n]", false),
            ("[\n  18446744073709551615\n]", false),
            ("\"\\u00e9\"", false),
            ("\"\\/\"", false),
            ("\"\\u000a\"", false),
            ("\"\\u001f\"", true),
            ("\"caf\u{e9}\"", true),
            ("[]", true),
            ("[ ]", false),
        ] {
            assert_eq!(is_canonical(text, 0), canonical, "{text}");
            if canonical {
                assert_eq!(parse_then_print(text, Some(0)), text);
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

    /// [`top_level_ranges`] through serde_json's own reader: the oracle of the scan.
    fn ranges_by_parser(text: &str) -> Option<HashMap<String, Range<usize>>> {
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

    proptest! {
        #[test]
        fn the_scan_finds_the_ranges_the_parser_finds(v in json_values()) {
            let object = serde_json::json!({"a": v, "b\\\"": [v.clone(), {"x": v}], "a ": 1});
            for text in [
                serde_json::to_string(&object).unwrap(),
                serde_json::to_string_pretty(&object).unwrap(),
                format!(" \n{}\t ", serde_json::to_string_pretty(&object).unwrap()),
                serde_json::to_string(&v).unwrap(),
            ] {
                prop_assert_eq!(top_level_ranges(&text), ranges_by_parser(&text));
            }
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
