//! Top-level fields a phase declares it never reads (`unread:` in its agent table).
//! A large state is mostly its two proposal pools, and most phases never look at
//! them: parsing them into script values is most of such a phase's time. A declared
//! field is scanned instead of built: its JSON syntax is checked with the rest of the
//! file, what its schema checks is built and checked (a proposal's `proposal_id`, not
//! its rationale or sweep config), and its text is kept. Written back (a phase run
//! with `--apply-state`), the field is parsed then and printed as it would have been.
//! A script that uses the field gets an error naming it, never a stand-in value.
//!
//! Only processes that keep no documents leave fields unread (a single `metaopt agent`
//! phase): a step keeps the state it read for the phases after it, which may read
//! everything.

use crate::engine::doc::{MapKey, ScriptValue, parse_json, parse_json_fields};
use crate::machine::model::FieldRule;
use rhai::{Array, Dynamic, Map};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::rc::Rc;

/// A top-level field of a document left unread (see the module docs).
#[derive(Clone, Debug)]
pub struct Unread {
    /// The field's name.
    name: Rc<str>,
    /// The whole document's text, shared by its unread fields.
    text: Rc<String>,
    /// What the field's schema rule looks at, built while the text was scanned.
    view: Dynamic,
}

impl Unread {
    /// What the field's schema rule needs to see of it (see [`Checked`]): checking it
    /// gives the issues checking the whole value would.
    pub fn view(&self) -> &Dynamic {
        &self.view
    }

    /// The value, parsed now from the document's text (to write it back or compare it).
    pub fn value(&self) -> Dynamic {
        // The text parsed once already: it parses again.
        parse_json_fields(&self.text, &[&self.name])
            .ok()
            .and_then(|doc| doc.try_cast::<Map>())
            .and_then(|mut map| map.remove(&*self.name))
            .unwrap_or_default()
    }

    /// Whether `other` is the same field of the same text.
    pub fn same_as(&self, other: &Unread) -> bool {
        self.name == other.name && (Rc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }

    /// The error a script gets when it uses the field.
    pub fn refusal(&self) -> String {
        format!(
            "field `{}` is declared unread by this phase (`unread:` in its agent table): \
             remove it there to read it",
            self.name
        )
    }
}

/// Parses a JSON text into a script value, leaving each top-level field named in
/// `unread` as an [`Unread`] scanned against its schema rule (`None`: no rule). The
/// whole text goes through one deserializer, so syntax errors and serde's nesting
/// limit are reported exactly as [`parse_json`] reports them. A text that is not an
/// object is parsed whole.
pub fn parse_json_leaving(
    text: &Rc<String>,
    unread: &[(&str, Option<&FieldRule>)],
) -> Result<Dynamic, serde_json::Error> {
    use serde::Deserializer as _;
    if !text.trim_start().starts_with('{') {
        return parse_json(text);
    }
    let mut de = serde_json::Deserializer::from_str(text.as_str());
    let map = (&mut de).deserialize_map(Leaving { text, unread })?;
    de.end()?;
    Ok(Dynamic::from_map(map))
}

/// No rule: a value of any type, nothing to build.
static ANY: std::sync::LazyLock<FieldRule> = std::sync::LazyLock::new(FieldRule::default);

/// The top-level map: unread fields scanned, the others built.
struct Leaving<'a> {
    text: &'a Rc<String>,
    unread: &'a [(&'a str, Option<&'a FieldRule>)],
}

impl<'de> Visitor<'de> for Leaving<'_> {
    type Value = Map;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Map, A::Error> {
        let mut out = Map::new();
        while let Some(key) = entries.next_key_seed(MapKey)? {
            let value = match self.unread.iter().find(|(f, _)| *f == key.as_str()) {
                Some((name, rule)) => {
                    let view = entries.next_value_seed(Checked(rule.unwrap_or(&ANY)))?;
                    Dynamic::from(Unread {
                        name: (*name).into(),
                        text: self.text.clone(),
                        view,
                    })
                }
                None => entries.next_value_seed(ScriptValue)?,
            };
            out.insert(key, value);
        }
        Ok(out)
    }
}

/// Goes over a value without building it, nested containers through serde's own
/// recursion (and so its nesting limit, as a parse would meet it).
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        while entries.next_key::<IgnoredAny>()?.is_some() {
            entries.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// Builds of a value what its schema rule looks at, so that checking the result gives
/// exactly the issues checking the whole value would: scalars whole; the listed fields
/// of an object; the items of an array; a rule that looks at a container as a whole
/// (`unique`, `non_empty`, `enum`) gets it whole; anything else an empty container of
/// the same kind (its type is all the rule checks).
struct Checked<'r>(&'r FieldRule);

impl Checked<'_> {
    fn whole(&self) -> bool {
        self.0.unique || self.0.non_empty || !self.0.one_of.is_empty()
    }
}

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = Dynamic;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Dynamic, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = Dynamic;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Dynamic, E> {
        ScriptValue.visit_bool(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dynamic, E> {
        ScriptValue.visit_i64(v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dynamic, E> {
        ScriptValue.visit_u64(v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dynamic, E> {
        ScriptValue.visit_f64(v)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dynamic, E> {
        ScriptValue.visit_str(v)
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Dynamic, E> {
        ScriptValue.visit_string(v)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Dynamic, E> {
        ScriptValue.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dynamic, A::Error> {
        if self.whole() {
            return ScriptValue.visit_seq(seq);
        }
        let mut items = Array::new();
        match &self.0.items {
            Some(rule) => {
                while let Some(item) = seq.next_element_seed(Checked(rule))? {
                    items.push(item);
                }
            }
            None => while seq.next_element_seed(Skip)?.is_some() {},
        }
        Ok(Dynamic::from_array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Dynamic, A::Error> {
        if self.whole() {
            return ScriptValue.visit_map(entries);
        }
        let mut out = Map::new();
        while let Some(key) = entries.next_key_seed(MapKey)? {
            match self.0.fields.get(key.as_str()) {
                Some(rule) => {
                    let value = entries.next_value_seed(Checked(rule))?;
                    out.insert(key, value);
                }
                None => entries.next_value_seed(Skip)?,
            }
        }
        Ok(Dynamic::from_map(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::doc::{parse_json, print_pretty, same, to_json};
    use crate::machine::Machine;

    const POOLS: [&str; 2] = ["current_proposals", "next_proposals"];

    /// The example's state in a sweep, its pools replaced by `current` and `next`.
    fn state_text(current: &str, next: &str) -> String {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/scenarios/fixtures/state-sweep.json"
        ))
        .expect("fixture");
        let mut v: serde_json::Value = serde_json::from_str(&text).expect("fixture parses");
        v["current_proposals"] = serde_json::Value::Null;
        v["next_proposals"] = serde_json::Value::Null;
        serde_json::to_string_pretty(&v)
            .expect("prints")
            .replacen(
                "\"current_proposals\": null",
                &format!("\"current_proposals\": {current}"),
                1,
            )
            .replacen(
                "\"next_proposals\": null",
                &format!("\"next_proposals\": {next}"),
                1,
            )
    }

    /// Parses `text` leaving the pools unread, with the state schema's rules.
    fn leaving(machine: &Machine, text: &str) -> Result<Dynamic, serde_json::Error> {
        let shared = machine.sandbox.shared.borrow();
        let built = shared.schemas["state"]
            .get(&machine.sandbox.engine)
            .expect("state schema builds");
        let rules: Vec<_> = POOLS
            .iter()
            .map(|f| (*f, built.schema.table.fields.get(*f)))
            .collect();
        parse_json_leaving(&Rc::new(text.to_string()), &rules)
    }

    fn issues(machine: &Machine, doc: &Dynamic) -> Vec<String> {
        crate::engine::sandbox::schema_issues(
            &machine.sandbox.engine,
            &machine.sandbox.shared.borrow(),
            "state",
            doc,
        )
        .expect("schema runs")
    }

    const RICH: &str = r#"[
      {"proposal_id": "p-1", "rationale": "caf\u00e9 \"quoted\" \\ tab\t", "sweep_config":
        {"method": "bayes", "metric": {"name": "val/acc", "goal": "maximize"},
         "parameters": {"lr": {"min": 1e-05, "max": 0.1}, "big": {"value": 18446744073709551616},
                        "deep": [[[{"a": [null, true, false, -0.0, 12345678901234567890]}]]]}}},
      {"proposal_id": "p-2", "extra": {}}
    ]"#;

    #[test]
    fn a_state_with_unread_pools_prints_converts_and_compares_as_the_whole_parse() {
        let machine = Machine::load(None).expect("embedded tables load");
        let text = state_text(RICH, r#"[{"proposal_id": "n-1", "proposal_id": "n-2"}]"#);
        let whole = parse_json(&text).expect("parses");
        let left = leaving(&machine, &text).expect("parses");
        let map = left.read_lock::<Map>().expect("a map");
        for pool in POOLS {
            assert!(map[pool].is::<Unread>(), "{pool} left unread");
        }
        assert!(map["baseline"].is_map() || map["baseline"].is_unit());
        drop(map);
        let (a, b) = (print_pretty(&whole).unwrap(), print_pretty(&left).unwrap());
        assert_eq!(a.text, b.text);
        assert_eq!(a.faithful, b.faithful);
        assert_eq!(to_json(&whole), to_json(&left));
        assert!(same(&whole, &left) && same(&left, &whole) && same(&left, &left));
        assert_eq!(issues(&machine, &left), Vec::<String>::new());
    }

    #[test]
    fn unread_pools_get_the_issues_of_the_whole_parse() {
        let machine = Machine::load(None).expect("embedded tables load");
        let broken = [
            r#"[{"rationale": "no id"}]"#,
            r#"[{"proposal_id": 5}, {"proposal_id": ""}, {"proposal_id": "   "}]"#,
            r#"["p-1", null, [], {"proposal_id": "ok", "sweep_config": 3}]"#,
            r#"{"proposal_id": "p-1"}"#,
            "null",
            "7",
        ];
        for pool in broken {
            let text = state_text(RICH, pool);
            let whole = issues(&machine, &parse_json(&text).expect("parses"));
            let left = issues(&machine, &leaving(&machine, &text).expect("parses"));
            assert!(!whole.is_empty(), "{pool}: broken");
            assert_eq!(whole, left, "{pool}");
        }
    }

    #[test]
    fn syntax_and_nesting_errors_in_unread_fields_are_those_of_the_whole_parse() {
        let machine = Machine::load(None).expect("embedded tables load");
        let deep = |n: usize| {
            format!(
                r#"[{{"proposal_id": "p", "x": {}1{}}}]"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let cases = [
            r#"[{"proposal_id": "p", "x": [1, 2,]}]"#.to_string(),
            r#"[{"proposal_id": "p", "x": "\q"}]"#.to_string(),
            r#"[{"proposal_id": "p", "x": 01}]"#.to_string(),
            deep(200),
            deep(126),
            deep(123),
        ];
        for pool in &cases {
            let text = state_text(pool, "[]");
            let whole = parse_json(&text).map(|_| ()).map_err(|e| e.to_string());
            let left = leaving(&machine, &text)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(whole, left, "{pool:.60}");
        }
        assert!(parse_json(&state_text(&deep(200), "[]")).is_err());
        assert!(parse_json(&state_text(&deep(100), "[]")).is_ok());
    }

    #[test]
    fn a_script_using_an_unread_field_gets_an_error_naming_it() {
        let machine = Machine::load(None).expect("embedded tables load");
        let text = state_text(RICH, "[]");
        let state = leaving(&machine, &text).expect("parses");
        // Indexed or read as a map, the error names the field; any other use names
        // the type (the phase's error quotes the expression, which names the field).
        for (script, names) in [
            ("state.current_proposals[0]", "`current_proposals`"),
            ("state.current_proposals.proposal_id", "`current_proposals`"),
            ("state.next_proposals[\"x\"]", "`next_proposals`"),
            ("state.next_proposals.len()", "unread:"),
        ] {
            let mut scope = rhai::Scope::new();
            scope.push("state", state.clone());
            let err = machine
                .sandbox
                .engine
                .eval_with_scope::<Dynamic>(&mut scope, script)
                .expect_err(script)
                .to_string();
            assert!(err.contains(names), "{script}: {err}");
        }
    }
}
