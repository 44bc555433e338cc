//! JSON documents held as script values. The state file is parsed straight
//! into the rhai value the tables read, checked against its schema in that
//! form, patched in that form and printed from it: a 10 MB state then exists
//! once in memory, not once as a JSON tree and once more as its script copy
//! (each conversion between the two cost as much as parsing the file).
//! Scalars follow serde_json's reading: an integer that fits in i64 is an
//! integer, any other number a float; `null` is `()`.

use crate::engine::json_text::Piece;
use crate::engine::unread::{self, Unread, may_be_unread};
use rhai::{Array, Dynamic, ImmutableString, Map};
use serde_json::Value;

/// What scripts and messages call a field left unread ([`Unread`]).
pub const UNREAD_TYPE: &str = "unread field (see `unread:` in the phase's agent table)";

/// Parses JSON text into a script value (serde_json's errors and recursion limit).
pub fn parse_json(text: &str) -> Result<Dynamic, serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = ScriptValue.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a script value straight from serde's events. rhai's own `Deserialize` for
/// `Dynamic` builds every map twice (its map goes through the generic
/// `From<BTreeMap<K, T>>`, which collects it again): a quarter of the parse of a large
/// state. Here each map and list is built once, keys straight from the text.
pub(crate) struct ScriptValue;

impl<'de> serde::de::DeserializeSeed<'de> for ScriptValue {
    type Value = Dynamic;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Dynamic, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ScriptValue {
    type Value = Dynamic;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Dynamic, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Dynamic, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Dynamic, E> {
        // serde_json's reading: an integer past i64 is a float.
        Ok(i64::try_from(v).map_or_else(|_| (v as f64).into(), Dynamic::from_int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Dynamic, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Dynamic, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Dynamic, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Dynamic, E> {
        Ok(Dynamic::UNIT)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Dynamic, A::Error> {
        let mut items = Array::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(ScriptValue)? {
            items.push(item);
        }
        Ok(Dynamic::from_array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<Dynamic, A::Error> {
        let mut map = Map::new();
        while let Some(key) = entries.next_key_seed(MapKey)? {
            let value = entries.next_value_seed(ScriptValue)?;
            map.insert(key, value);
        }
        Ok(Dynamic::from_map(map))
    }
}

/// A map key read straight into rhai's key type (short keys stay inline: no allocation).
pub(crate) struct MapKey;

/// rhai's map key type (a small-string type rhai does not export by name).
pub(crate) type Key = <Map as KeyOf>::Key;

/// Names the key type of a map.
pub(crate) trait KeyOf {
    type Key;
}

impl<K, V> KeyOf for std::collections::BTreeMap<K, V> {
    type Key = K;
}

impl<'de> serde::de::DeserializeSeed<'de> for MapKey {
    type Value = Key;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for MapKey {
    type Value = Key;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
}

/// The top-level `fields` of a JSON object text, the rest of it checked for syntax but
/// never built (nor held to the nesting limit): a peek at one field of a large state
/// costs a scan, not a parse. A text that is not an object is parsed whole.
pub fn parse_json_fields(text: &str, fields: &[&str]) -> Result<Dynamic, serde_json::Error> {
    struct Listed<'f>(&'f [&'f str]);
    impl<'de> TopLevelFields<'de> for Listed<'_> {
        fn read<A: serde::de::MapAccess<'de>>(
            &self,
            key: &str,
            entries: &mut A,
        ) -> Result<Option<Dynamic>, A::Error> {
            if self.0.contains(&key) {
                entries.next_value_seed(ScriptValue).map(Some)
            } else {
                entries.next_value::<serde::de::IgnoredAny>().map(|_| None)
            }
        }
    }
    parse_top_level(text, Listed(fields))
}

/// How [`parse_top_level`] reads the value of each top-level field.
pub(crate) trait TopLevelFields<'de> {
    /// Reads the value of `key` from `entries`: the value to keep, or `None` (skipped).
    fn read<A: serde::de::MapAccess<'de>>(
        &self,
        key: &str,
        entries: &mut A,
    ) -> Result<Option<Dynamic>, A::Error>;
}

/// Parses a JSON object text field by field as `fields` reads them (one deserializer
/// for the whole text: errors are reported as [`parse_json`] reports them). A text that
/// is not an object is parsed whole.
pub(crate) fn parse_top_level<'de>(
    text: &'de str,
    fields: impl TopLevelFields<'de>,
) -> Result<Dynamic, serde_json::Error> {
    parse_top_level_placed(text, fields).map(|(value, _)| value)
}

/// Where each top-level key of an object text starts (its opening quote), in order;
/// `None` when a key holds an escape (the parse then gives a copy, not the text's own).
pub(crate) type KeyPlaces = Option<Vec<usize>>;

/// [`parse_top_level`], with the places of the top-level keys (`None` for a text that
/// is not an object).
pub(crate) fn parse_top_level_placed<'de>(
    text: &'de str,
    fields: impl TopLevelFields<'de>,
) -> Result<(Dynamic, KeyPlaces), serde_json::Error> {
    use serde::Deserializer as _;
    use serde::de::{MapAccess, Visitor};
    if !text.trim_start().starts_with('{') {
        return parse_json(text).map(|value| (value, None));
    }
    struct Top<'de, F> {
        text: &'de str,
        fields: F,
    }
    impl<'de, F: TopLevelFields<'de>> Visitor<'de> for Top<'de, F> {
        type Value = (Map, KeyPlaces);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
            let mut out = Map::new();
            let mut places = Some(Vec::new());
            while let Some((key, at)) = entries.next_key_seed(PlacedKey(self.text))? {
                match (&mut places, at) {
                    (Some(list), Some(at)) => list.push(at),
                    _ => places = None,
                }
                if let Some(value) = self.fields.read(key.as_str(), &mut entries)? {
                    out.insert(key, value);
                }
            }
            Ok((out, places))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let (map, places) = (&mut de).deserialize_map(Top { text, fields })?;
    de.end()?;
    Ok((Dynamic::from_map(map), places))
}

/// A map key, and where its opening quote is in `.0` when the key is the text's own
/// (no escape in it).
struct PlacedKey<'de>(&'de str);

impl<'de> serde::de::DeserializeSeed<'de> for PlacedKey<'de> {
    type Value = (Key, Option<usize>);
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PlacedKey<'de> {
    type Value = (Key, Option<usize>);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        // A slice of the text: its distance from the text's start is its place.
        let at = (v.as_ptr() as usize)
            .checked_sub(self.0.as_ptr() as usize)
            .filter(|at| *at >= 1 && at + v.len() <= self.0.len())
            .map(|at| at - 1);
        Ok((v.into(), at))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok((v.into(), None))
    }
}

/// Pretty-printed JSON of `value` with a final newline (`to_pretty` for script values).
pub fn to_pretty(value: &Dynamic) -> Result<String, String> {
    print_pretty(value).map(|p| p.text)
}

/// A script value printed as pretty JSON, and whether the text gives the value back.
#[derive(Debug)]
pub struct Printed {
    /// The text, with a final newline.
    pub text: String,
    /// Parsing `text` gives the value printed (see [`round_trips`]): found while
    /// printing, so a large state is not walked a second time to know it.
    pub faithful: bool,
}

/// [`to_pretty`], telling whether the text gives the value back.
pub fn print_pretty(value: &Dynamic) -> Result<Printed, String> {
    let mut faithful = true;
    let mut text = crate::engine::pretty::pretty(value, &mut faithful)?;
    text.push('\n');
    Ok(Printed { text, faithful })
}

/// A map printed, and where each of its values is in the text: a handoff's state patch
/// holds some of a new state's values whole, and takes their texts from there.
#[derive(Debug)]
pub struct PrintedFields {
    /// The map's text, as [`print_pretty`] prints it.
    printed: Printed,
    /// Where each top-level value is in it.
    ranges: crate::engine::pretty::FieldRanges,
}

impl PrintedFields {
    /// The printed text of field `key`, as it reads in the map (one level deep).
    pub fn text_of(&self, key: &str) -> Option<Piece<'_>> {
        let (_, range) = self.ranges.iter().find(|(k, _)| k == key)?;
        Some(Piece {
            text: self.printed.text.get(range.clone())?,
            depth: 1,
        })
    }

    /// The whole map's text.
    pub fn into_printed(self) -> Printed {
        self.printed
    }
}

/// `value` printed, noting where its fields are (`None`: it is not a map).
pub fn print_fields(value: &Dynamic) -> Result<Option<PrintedFields>, String> {
    let mut faithful = true;
    let Some((mut text, ranges)) = crate::engine::pretty::pretty_fields(value, &mut faithful)?
    else {
        return Ok(None);
    };
    text.push('\n');
    Ok(Some(PrintedFields {
        printed: Printed { text, faithful },
        ranges,
    }))
}

/// Writes `state` to `path` atomically as pretty JSON (the state file's format); the
/// text written.
pub fn write_state(path: &str, state: &Dynamic) -> Result<Printed, String> {
    let printed = print_pretty(state).map_err(|e| format!("{path}: cannot write state: {e}"))?;
    write_state_text(path, &printed.text)?;
    Ok(printed)
}

/// Writes `text`, a state printed by [`to_pretty`], to `path` atomically.
pub fn write_state_text(path: &str, text: &str) -> Result<(), String> {
    crate::workspace::fsio::write_atomic(std::path::Path::new(path), text.as_bytes())
        .map_err(|e| format!("{path}: cannot write state: {e}"))
}

/// Compact JSON of `value` (how messages quote a value).
pub fn json_text(value: &Dynamic) -> String {
    crate::engine::pretty::compact(value).unwrap_or_else(|_| value.to_string())
}

/// Short JSON type name of a script value, for messages (`type_name` primitive, schema issues).
pub fn type_name(value: &Dynamic) -> &'static str {
    if value.is_unit() {
        "null"
    } else if value.is_bool() {
        "boolean"
    } else if value.is_int() {
        "integer"
    } else if value.is_float() {
        "number"
    } else if value.is_string() || value.is_char() {
        "string"
    } else if value.is_array() {
        "array"
    } else if value.is_map() {
        "object"
    } else if value.is::<Unread>() {
        UNREAD_TYPE
    } else {
        value.type_name()
    }
}

/// The number `value` holds, integer or float.
pub fn as_number(value: &Dynamic) -> Option<f64> {
    value
        .as_int()
        .map(|i| i as f64)
        .ok()
        .or_else(|| value.as_float().ok())
}

/// `value` with only the listed top-level fields, when it is a map; otherwise `value`
/// whole. Copies only what it keeps (how a large document is read in part).
pub fn project<'f>(value: &Dynamic, fields: impl IntoIterator<Item = &'f str>) -> Dynamic {
    match value.read_lock::<Map>() {
        Some(map) => Dynamic::from_map(
            fields
                .into_iter()
                .filter_map(|f| map.get(f).map(|v| (f.into(), v.clone())))
                .collect(),
        ),
        None => value.clone(),
    }
}

/// What a script reading only `fields` of `value` needs to see: those top-level fields
/// ([`project`]), or all of `value` when `fields` is `None` (it uses `value` otherwise).
pub fn view(value: &Dynamic, fields: Option<&[String]>) -> Dynamic {
    match fields {
        Some(fields) => project(value, fields.iter().map(String::as_str)),
        None => value.clone(),
    }
}

/// [`view`] for a reader outside a phase (a guard choosing the phase, a report): the
/// fields it sees that were left unread are parsed, as it may read them all.
pub fn view_read(value: &Dynamic, fields: Option<&[String]>) -> Dynamic {
    let mut seen = view(value, fields);
    if let Some(mut map) = seen.write_lock::<Map>() {
        // A field that no longer parses stays unread: using it names the field.
        let _ = crate::engine::unread::materialize_fields(&mut map, |_| false);
    }
    seen
}

/// The text `value` holds, when it is a string.
pub fn with_str<R>(value: &Dynamic, f: impl FnOnce(&str) -> R) -> Option<R> {
    value.read_lock::<ImmutableString>().map(|s| f(s.as_str()))
}

/// `value[key]` as text, when `value` is a map holding a string there (a field left
/// unread is parsed to see).
pub fn field_str(value: &Dynamic, key: &str) -> Option<String> {
    let map = value.read_lock::<Map>()?;
    let field = map.get(key)?;
    match unread::parsed(field) {
        Some(parsed) => parsed.ok().and_then(|v| with_str(&v, str::to_string)),
        None => with_str(field, str::to_string),
    }
}

/// True when `a` and `b` are the same JSON document (an integer never equals a float,
/// as with `serde_json::Value`).
pub fn same(a: &Dynamic, b: &Dynamic) -> bool {
    if (may_be_unread(a) || may_be_unread(b))
        && let Some(found) = same_unread(a, b)
    {
        return found;
    }
    // Most common first: strings, integers, maps, arrays.
    if let Some(x) = a.read_lock::<ImmutableString>() {
        return b
            .read_lock::<ImmutableString>()
            .is_some_and(|y| x.as_str() == y.as_str());
    }
    if let Ok(x) = a.as_int() {
        return b.as_int() == Ok(x);
    }
    if let Some(x) = a.read_lock::<Map>() {
        return b.read_lock::<Map>().is_some_and(|y| {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        });
    }
    if let Some(x) = a.read_lock::<Array>() {
        return b.read_lock::<Array>().is_some_and(|y| {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| same(p, q))
        });
    }
    if a.type_id() != b.type_id() {
        return false;
    }
    if let (Ok(x), Ok(y)) = (a.as_float(), b.as_float()) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (a.as_bool(), b.as_bool()) {
        return x == y;
    }
    a.is_unit() || json_text(a) == json_text(b)
}

/// [`same`] when `a` or `b` is a field left unread (compared as text, or parsed).
fn same_unread(a: &Dynamic, b: &Dynamic) -> Option<bool> {
    // A value that no longer parses (a bug) is unlike anything.
    if let Some(x) = a.read_lock::<Unread>() {
        return Some(match b.read_lock::<Unread>() {
            Some(y) if x.same_as(&y) => true,
            _ if x.surely_unlike(b) => false,
            _ => x.value().is_ok_and(|x| same(&x, b)),
        });
    }
    if let Some(y) = b.read_lock::<Unread>()
        && y.surely_unlike(a)
    {
        return Some(false);
    }
    unread::parsed(b).map(|y| y.is_ok_and(|y| same(a, &y)))
}

/// The deepest nesting of arrays and maps in `value` (a scalar: 0); stops counting past `limit`.
pub fn nesting(value: &Dynamic, limit: usize) -> usize {
    fn walk(v: &Dynamic, depth: usize, limit: usize) -> usize {
        if depth > limit {
            return depth;
        }
        if let Some(m) = v.read_lock::<Map>() {
            return m
                .values()
                .map(|c| walk(c, depth + 1, limit))
                .fold(depth + 1, usize::max);
        }
        if let Some(a) = v.read_lock::<Array>() {
            return a
                .iter()
                .map(|c| walk(c, depth + 1, limit))
                .fold(depth + 1, usize::max);
        }
        if may_be_unread(v)
            && let Some(field) = v.read_lock::<Unread>()
        {
            // Measured on its text (a field moved deeper may pass the limit).
            return depth + field.nesting(limit);
        }
        depth
    }
    walk(value, 0, limit)
}

/// A JSON value as a script value (for small values: documents are parsed straight
/// into script values with [`parse_json`]).
pub fn from_json(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => Dynamic::from_array(a.iter().map(from_json).collect()),
        // `from_map`: `Map::into()` would collect the map a second time.
        Value::Object(o) => Dynamic::from_map(
            o.iter()
                .map(|(k, v)| (k.as_str().into(), from_json(v)))
                .collect(),
        ),
    }
}

/// Whether `value` printed as JSON parses back to the same value: only maps, lists,
/// `()`, booleans, integers, finite floats and strings (a non-finite float prints as
/// `null`, a character as a string). What [`Printed::faithful`] tells while printing;
/// the tests hold the two to each other.
#[cfg(test)]
pub fn round_trips(value: &Dynamic) -> bool {
    if let Some(parsed) = unread::parsed(value) {
        return parsed.is_ok_and(|v| round_trips(&v));
    }
    if let Some(m) = value.read_lock::<Map>() {
        return m.values().all(round_trips);
    }
    if let Some(a) = value.read_lock::<Array>() {
        return a.iter().all(round_trips);
    }
    plain_scalar(value)
}

/// Whether a value that is neither a map nor a list prints as JSON that parses back to
/// it: `()`, a boolean, an integer, a finite float, a string.
#[cfg(test)]
fn plain_scalar(value: &Dynamic) -> bool {
    match value.as_float() {
        Ok(f) => f.is_finite(),
        Err(_) => value.is_unit() || value.is_bool() || value.is_int() || value.is_string(),
    }
}

/// A script value as JSON: `()` is null, a non-finite float is null, a character is a
/// string; other script types (function pointers, ...) print as serde_json prints them.
pub fn to_json(value: &Dynamic) -> Value {
    if let Some(parsed) = unread::parsed(value) {
        // Parsed once already: an error is a bug, and `null` is never written to the
        // state (printing a state goes through `print_pretty`, which stops on it).
        return parsed.map_or(Value::Null, |v| to_json(&v));
    }
    if let Some(m) = value.read_lock::<Map>() {
        return Value::Object(m.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect());
    }
    if let Some(a) = value.read_lock::<Array>() {
        return Value::Array(a.iter().map(to_json).collect());
    }
    if value.is_unit() {
        return Value::Null;
    }
    if let Ok(b) = value.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(i) = value.as_int() {
        return Value::from(i);
    }
    if let Ok(f) = value.as_float() {
        return serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
    }
    if let Some(s) = with_str(value, str::to_string) {
        return Value::String(s);
    }
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_json_fields_builds_only_the_fields_asked_for_and_checks_the_rest() {
        let text =
            r#"{"a": {"x": [1, 2.5, "s"]}, "big": [{"k": 1}, {"k": 2}], "c": null, "a2": 3}"#;
        let v = parse_json_fields(text, &["a", "c", "missing"]).expect("parses");
        assert_eq!(
            to_json(&v),
            serde_json::json!({"a": {"x": [1, 2.5, "s"]}, "c": null})
        );
        // Broken syntax or trailing text in a skipped field is still an error.
        assert!(parse_json_fields(r#"{"a": 1, "big": [1, }"#, &["a"]).is_err());
        assert!(parse_json_fields(r#"{"a": 1} x"#, &["a"]).is_err());
        // Nesting is limited in the fields built; a skipped field is only scanned.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let text = format!("{{\"a\": 1, \"b\": {deep}}}");
        assert!(parse_json_fields(&text, &["a"]).is_ok());
        assert!(parse_json_fields(&text, &["b"]).is_err());
        // A document that is not an object is given whole.
        assert_eq!(
            to_json(&parse_json_fields(" [1, 2]", &["a"]).unwrap()),
            serde_json::json!([1, 2])
        );
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn printing_tells_whether_the_text_gives_the_value_back() {
        let parsed = parse_json(r#"{"a": [1, 2.5, "s", null, true, {"b": {}}], "c": -3}"#).unwrap();
        let mut inner = Map::new();
        inner.insert("x".into(), f64::NAN.into());
        let mut nan_deep = Map::new();
        nan_deep.insert(
            "a".into(),
            Dynamic::from_array(vec![Dynamic::from_map(inner)]),
        );
        let nan_deep = Dynamic::from_map(nan_deep);
        let values = [
            parsed,
            nan_deep,
            Dynamic::from(f64::INFINITY),
            Dynamic::from('c'),
            Dynamic::from_array(vec![Dynamic::UNIT, Dynamic::from(2.0)]),
        ];
        for v in &values {
            let printed = print_pretty(v).unwrap();
            // The same text rhai's own printing gives, and the flag agrees with round_trips.
            assert_eq!(
                printed.text,
                format!("{}\n", serde_json::to_string_pretty(v).unwrap())
            );
            assert_eq!(printed.faithful, round_trips(v), "{}", printed.text);
        }
        assert!(print_pretty(&values[0]).unwrap().faithful);
        assert!(!print_pretty(&values[1]).unwrap().faithful);
        // Shared values (closures capture them) print and tell through the share.
        for v in [values[0].clone(), values[2].clone()] {
            let shared = v.clone().into_shared();
            let printed = print_pretty(&shared).unwrap();
            assert_eq!(printed.text, print_pretty(&v).unwrap().text);
            assert_eq!(printed.faithful, round_trips(&v));
        }
    }

    #[test]
    fn parsing_agrees_with_rhai_on_escaped_and_repeated_keys() {
        for text in [
            r#"{"a\"b": 1, "\u00e9": [true], "k": 1, "k": {"x": null}}"#,
            r#"[18446744073709551615, -9223372036854775808, 1.5e300, -0.0, "\ud83d\ude00"]"#,
        ] {
            let ours = parse_json(text).unwrap();
            let theirs: Dynamic = serde_json::from_str(text).unwrap();
            assert!(same(&ours, &theirs), "{text}: {ours:?} vs {theirs:?}");
            assert_eq!(to_json(&ours), to_json(&theirs), "{text}");
        }
    }

    #[test]
    fn parse_print_and_convert_agree_with_serde_json() {
        let text = r#"{"b": [1, 2.5, -3, 1.0, null, true, "x\"y"], "a": {"n": 18446744073709551615, "e": {}}}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let dynamic = parse_json(text).unwrap();
        assert!(same(&dynamic, &from_json(&value)));
        // u64 beyond i64 becomes a float on both paths.
        assert_eq!(
            type_name(
                &dynamic.read_lock::<Map>().unwrap()["a"]
                    .read_lock::<Map>()
                    .unwrap()["n"]
            ),
            "number"
        );
        let reprinted: Value = serde_json::from_str(&to_pretty(&dynamic).unwrap()).unwrap();
        assert_eq!(reprinted["b"], json!([1, 2.5, -3, 1.0, null, true, "x\"y"]));
        assert_eq!(to_json(&dynamic)["b"], reprinted["b"]);
    }

    #[test]
    fn same_tells_integers_from_floats_and_compares_deeply() {
        let a = from_json(&json!({"k": [1, {"x": "y"}]}));
        assert!(same(&a, &from_json(&json!({"k": [1, {"x": "y"}]}))));
        assert!(!same(&a, &from_json(&json!({"k": [1.0, {"x": "y"}]}))));
        assert!(!same(&a, &from_json(&json!({"k": [1, {"x": "z"}]}))));
        assert!(!same(&a, &from_json(&json!({"k": [1]}))));
        assert!(same(&Dynamic::UNIT, &from_json(&Value::Null)));
        assert!(!same(&Dynamic::UNIT, &false.into()));
    }

    #[test]
    fn nesting_counts_arrays_and_maps() {
        assert_eq!(nesting(&from_json(&json!(1)), 127), 0);
        assert_eq!(nesting(&from_json(&json!({"a": [[1], 2]})), 127), 3);
    }

    #[test]
    fn non_finite_floats_print_as_null() {
        let v: Dynamic = f64::NAN.into();
        assert_eq!(to_json(&v), Value::Null);
        assert_eq!(to_pretty(&v).unwrap(), "null\n");
    }
}
