//! Top-level fields a phase declares it never reads (`unread:` in its agent table).
//! A large state is mostly its two proposal pools, and most phases never look at
//! them: parsing them into script values is most of such a phase's time. A declared
//! field is scanned instead of built: its JSON syntax is checked with the rest of the
//! file, what its schema checks is built and checked (a proposal's `proposal_id`, not
//! its rationale or sweep config), and its text is kept. Wherever the engine needs the
//! value (a change below the field), it is parsed then from the text; a state written
//! back, or the field's `to_json()`, prints the field from its text without parsing it
//! ([`crate::engine::reprint`]). A script that indexes the field or reads a property
//! of it gets an error naming it. The one exception is exact by construction: an
//! unread list whose rule checks each item answers `len()` and `join_field` of the
//! item fields the rule types as scalars, from what the scan built.
//!
//! A `metaopt agent` phase, with or without `--apply-state`, leaves its declared fields
//! unread. A step reads its state once, leaving unread the fields of the phase its
//! guards will likely choose (none, when the state cannot be told from the text); the
//! first phase of the step that reads such a field has it parsed then
//! ([`materialize_fields`]), in the kept document, for the phases after it.
//!
//! An unread list also answers `string_set`, `max_suffix` and `has_item` of an item
//! field (that field alone read from the text), and grows without being read: items
//! appended (`append:`, `push`, `+=`) are kept built beside the text, printed after it,
//! checked after the view and seen by every question above. A selection of its items
//! (`unseen_items`), and two such lists joined (`+=`, `append`), are unread lists too:
//! in our layout the items' texts are copied into a document of their own, otherwise
//! the items are built and appended to an empty unread list ([`Unread::unseen_items`]).

use crate::engine::doc::{
    MapKey, ScriptValue, TopLevelFields, parse_json_fields, parse_top_level_placed,
};
use crate::machine::model::FieldRule;
use rhai::{Array, Dynamic, Map};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::rc::Rc;

/// A top-level field of a document left unread (see the module docs).
#[derive(Clone)]
pub struct Unread {
    /// The field's name.
    name: Rc<str>,
    /// The whole document's text, shared by its unread fields.
    text: Rc<String>,
    /// Where each top-level field's value is in `text`, found when first needed and
    /// shared by the document's unread fields.
    ranges: Rc<TextRanges>,
    /// Whether the field's text is in our layout at depth 1, where a top-level field of
    /// a file we wrote sits ([`crate::engine::reprint::is_canonical`]), once looked at.
    canonical: Rc<std::cell::OnceCell<bool>>,
    /// What the field's schema rule looks at, built while the text was scanned.
    /// (Shared: an unread field is cloned wherever a script passes it on.)
    view: Rc<Dynamic>,
    /// The rule `view` was built for.
    rule: Rc<FieldRule>,
    /// The item fields whose values `view` holds exactly, when it holds every item of a
    /// list (see [`Unread::item_count`], [`Unread::join_field`]); `None` otherwise.
    outline: Option<Rc<[String]>>,
    /// Items appended to the list since it was read (`append:` of a rule), built: the
    /// field's value is the text's items, then these.
    appended: Rc<Array>,
    /// How deeply arrays and objects nest in the text's value, measured as it was read.
    nesting: usize,
}

/// Where each top-level field's value is in a document's text (`None` inside: not
/// found, or not an object), once looked for.
type TextRanges =
    std::cell::OnceCell<Option<std::collections::HashMap<String, std::ops::Range<usize>>>>;

impl std::fmt::Debug for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the document's text: megabytes.
        write!(
            f,
            "Unread({}, {} bytes of text)",
            self.name,
            self.text.len()
        )
    }
}

impl Unread {
    /// What `rule` needs to see of the field (see [`Checked`]): checking it, then its
    /// appended items (returned apart, each an item of the list after the view's), gives
    /// the issues checking the whole value would. The view built while scanning when
    /// `rule` is the rule it was built for (the field where it was read), else the whole
    /// value (the field was moved elsewhere in the document).
    pub fn view_for(
        &self,
        rule: &FieldRule,
    ) -> Result<(std::borrow::Cow<'_, Dynamic>, &[Dynamic]), String> {
        // (A view suits any rule equal to its own: a list moved from one document to
        // another under the same item rule is still checked from its view.)
        if *rule != *self.rule {
            return Ok((std::borrow::Cow::Owned(self.value()?), &[]));
        }
        // A rule that looks at the list as a whole sees it whole, appended items included;
        // any other looks at each item alone.
        if !self.appended.is_empty() && whole_rule(rule) {
            let whole = self.with_appended_items((*self.view).clone());
            return Ok((std::borrow::Cow::Owned(whole), &[]));
        }
        Ok((std::borrow::Cow::Borrowed(&*self.view), &self.appended))
    }

    /// The value, parsed now from the document's text (to compare it or change it, or
    /// to write it back when its text cannot be printed again as it is). The text
    /// parsed when it was read, so this fails only on a bug; the error then stops the
    /// write instead of putting anything else in the file.
    pub fn value(&self) -> Result<Dynamic, String> {
        Ok(self.with_appended_items(self.text_value()?))
    }

    /// The value of the field's text, parsed now (without the appended items).
    fn text_value(&self) -> Result<Dynamic, String> {
        parse_fields(&self.text, &[&self.name])?
            .remove(&*self.name)
            .ok_or_else(|| no_longer_parses(&self.name))
    }

    /// `parsed` (the text's value) with the appended items added.
    fn with_appended_items(&self, mut parsed: Dynamic) -> Dynamic {
        if !self.appended.is_empty()
            && let Some(mut items) = parsed.write_lock::<Array>()
        {
            items.extend(self.appended.iter().cloned());
        }
        parsed
    }

    /// Whether the field holds a list (its view is one: a scan keeps the kind).
    pub fn is_list(&self) -> bool {
        self.view.is_array()
    }

    /// How deeply arrays and objects nest in the value (as [`crate::engine::doc::nesting`]
    /// measures a built value): the text's, measured as it was read, or one more than
    /// an appended item's.
    pub fn nesting(&self, limit: usize) -> usize {
        let appended = self
            .appended
            .iter()
            .map(|item| crate::engine::doc::nesting(item, limit) + 1)
            .max()
            .unwrap_or(0);
        self.nesting.max(appended)
    }

    /// Whether the field's text is in our layout at [`FIELD_DEPTH`] (looked at once).
    fn is_canonical(&self) -> bool {
        *self.canonical.get_or_init(|| {
            self.range()
                .is_some_and(|r| crate::engine::reprint::is_canonical(&self.text[r], FIELD_DEPTH))
        })
    }

    /// Where the field's value is in the text.
    fn range(&self) -> Option<std::ops::Range<usize>> {
        self.ranges
            .get_or_init(|| crate::engine::reprint::top_level_ranges(&self.text))
            .as_ref()
            .and_then(|r| r.get(&*self.name))
            .cloned()
    }

    /// Appends the field's value at `layout` as printing its parse would, from its text
    /// (see [`crate::engine::reprint`]); `false`, with `out` untouched, when the text
    /// cannot be printed that way (the caller parses it).
    pub fn reprint(
        &self,
        out: &mut String,
        layout: crate::engine::pretty::Layout,
        faithful: &mut bool,
    ) -> bool {
        let Some(range) = self.range() else {
            return false;
        };
        let text = &self.text[range];
        let start = out.len();
        // A file we wrote holds the field as it is printed here: copied, not read again
        // (deeper, as in a handoff's state patch, each line indented further; shallower,
        // as `to_json` of the field prints it, each line less indented).
        let printed = match layout {
            Some(depth) if self.is_canonical() && reindent_lines(out, text, FIELD_DEPTH, depth) => {
                true
            }
            _ => crate::engine::reprint::reprint(out, text, layout),
        };
        if !printed || self.appended.is_empty() {
            return printed;
        }
        // The appended items go where the closing bracket was, as the entries after the
        // text's (`[a]` and `b` make `[a,b]` in either layout; `[]` and `b` make `[b]`).
        let mut close = String::new();
        crate::engine::pretty::close(&mut close, ']', layout);
        let empty = out[start..] == *"[]";
        if empty {
            out.truncate(out.len() - 1);
        } else if out[start..].ends_with(&close) {
            out.truncate(out.len() - close.len());
        } else {
            out.truncate(start);
            return false;
        }
        let deeper = crate::engine::pretty::deeper(layout);
        for (i, item) in self.appended.iter().enumerate() {
            crate::engine::pretty::open_entry(out, empty && i == 0, layout);
            if crate::engine::pretty::write_value(out, item, deeper, faithful).is_err() {
                out.truncate(start);
                return false;
            }
        }
        out.push_str(&close);
        true
    }

    /// The number of items, when the field is a list whose schema rule checks each item
    /// (its scan then kept one entry per item).
    pub fn item_count(&self) -> Result<rhai::INT, String> {
        match (&self.outline, self.view.read_lock::<Array>()) {
            (Some(_), Some(items)) => Ok((items.len() + self.appended.len()) as rhai::INT),
            _ => Err(self.refusal()),
        }
    }

    /// The items' `field` values as text joined by `sep` (as `join_field` on a list),
    /// when `field` is an item field the scan kept exactly (a scalar its rule types).
    /// Exact because `join_field` reads one key of a map item and prints a scalar,
    /// which the scan built as a parse would.
    pub fn join_field(&self, field: &str, sep: &str) -> Result<String, String> {
        let kept = self
            .outline
            .as_ref()
            .is_some_and(|fields| fields.iter().any(|f| f == field));
        match self.view.read_lock::<Array>() {
            Some(items) if kept => {
                let mut text = crate::engine::sandbox::join_field(&items, field, sep);
                if !self.appended.is_empty() {
                    if !items.is_empty() {
                        text.push_str(sep);
                    }
                    text += &crate::engine::sandbox::join_field(&self.appended, field, sep);
                }
                Ok(text)
            }
            _ => Err(self.refusal()),
        }
    }

    /// The `field` value of each item that has one (a map holding it), in order, the
    /// appended items' too: what the list primitives that read one item field
    /// (`string_set`, `max_suffix`, `has_item`) see of the whole list. From the scan when
    /// it kept `field` exactly, else from the text ([`Unread::scan_item_field`]).
    pub fn item_field(&self, field: &str) -> Result<Array, String> {
        let kept = self
            .outline
            .as_ref()
            .is_some_and(|fields| fields.iter().any(|f| f == field));
        let mut values = match self.view.read_lock::<Array>() {
            Some(view) if kept => crate::engine::sandbox::field_values(&view, field),
            Some(_) => self.scan_item_field(field)?,
            None => return Err(self.refusal()),
        };
        values.extend(crate::engine::sandbox::field_values(&self.appended, field));
        Ok(values)
    }

    /// [`Unread::item_field`] of the text's items: found by line in our layout, else from
    /// the parsed list.
    fn scan_item_field(&self, field: &str) -> Result<Array, String> {
        let range = self.range().ok_or_else(|| no_longer_parses(&self.name))?;
        if self.is_canonical() {
            return self.item_field_in_layout(&self.text[range], field);
        }
        // Another layout (a file metaopt did not write): the list is parsed.
        let items = self.text_value()?;
        let items = items.read_lock::<Array>();
        Ok(items.map_or_else(Array::new, |items| {
            crate::engine::sandbox::field_values(&items, field)
        }))
    }

    /// [`Unread::item_field`] of a list's text in our layout at [`FIELD_DEPTH`]: an item's
    /// keys start lines indented one level deeper than it, and nothing else does (a
    /// string holds no line break; deeper values are indented further), each key once
    /// (keys ascend). Each value found is read alone.
    fn item_field_in_layout(&self, text: &str, field: &str) -> Result<Array, String> {
        let key = serde_json::to_string(field).map_err(|e| e.to_string())?;
        let marker = format!("\n{}{key}: ", "  ".repeat(FIELD_DEPTH + 2));
        let mut values = Array::new();
        for at in memchr::memmem::find_iter(text.as_bytes(), marker.as_bytes()) {
            let mut de = serde_json::Deserializer::from_str(&text[at + marker.len()..]);
            let value = ScriptValue
                .deserialize(&mut de)
                .map_err(|_| no_longer_parses(&self.name))?;
            values.push(value);
        }
        Ok(values)
    }

    /// Whether `other`, a built value, cannot be the field's value, told without parsing
    /// it: a list of another length, or not a list when the field is one.
    pub fn surely_unlike(&self, other: &Dynamic) -> bool {
        if !self.is_list() {
            return false;
        }
        let count = || self.item_count().ok();
        if let Some(items) = other.read_lock::<Array>() {
            return count().is_some_and(|n| n as usize != items.len());
        }
        if may_be_unread(other)
            && let Some(field) = other.read_lock::<Unread>()
        {
            return !field.is_list()
                || count()
                    .zip(field.item_count().ok())
                    .is_some_and(|(a, b)| a != b);
        }
        true
    }

    /// Appends `item` to the list (as `push` does), still unread.
    pub fn push(&mut self, item: Dynamic) -> Result<(), String> {
        self.extend(vec![item])
    }

    /// Appends `items` to the list (as `+=` of a built list does), still unread.
    pub fn extend(&mut self, items: Array) -> Result<(), String> {
        if !self.is_list() {
            return Err(self.refusal());
        }
        Rc::make_mut(&mut self.appended).extend(items);
        Ok(())
    }

    /// The list's items, parsed now (the refusal when the field is not a list).
    pub fn items(&self) -> Result<Array, String> {
        self.value()?
            .try_cast::<Array>()
            .ok_or_else(|| self.refusal())
    }

    /// The items whose string `field` is not a key of `seen`, each value once (what
    /// `unseen_items` gives of the whole list), as a list still unread. Their texts are
    /// copied into a list of their own; when that cannot be told from the scan (the
    /// text not in our layout, `field` not kept exactly, items appended), the list is
    /// read and the items kept are appended to an empty one (so the answer is always of
    /// one kind, and `+=` of two such answers joins them).
    pub fn unseen_items(&self, field: &str, seen: &Map) -> Result<Unread, String> {
        let exact = self
            .outline
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == field));
        if exact
            && let Some(items) = self.item_texts()
            && let Some(view) = self.view.read_lock::<Array>()
        {
            let keep = crate::engine::sandbox::unseen_indices(&view, field, seen);
            let pad = format!("\n{}", "  ".repeat(FIELD_DEPTH + 1));
            let body = |text: &mut String| {
                for (n, &i) in keep.iter().enumerate() {
                    if n > 0 {
                        text.push(',');
                    }
                    text.push_str(&pad);
                    text.push_str(items[i]);
                }
            };
            let view = keep.iter().map(|&i| view[i].clone()).collect();
            return Ok(self.with_body(body, view, None));
        }
        let items = self.items()?;
        let kept = crate::engine::sandbox::unseen_indices(&items, field, seen);
        let mut list = self.with_body(|_| {}, Array::new(), Some(1));
        list.extend(kept.into_iter().map(|i| items[i].clone()).collect())?;
        Ok(list)
    }

    /// The list followed by `other`'s items (as `+=` of the whole lists), their texts
    /// copied into a list of their own (each list's text between its brackets, not
    /// split into items); `None` when either is not in our layout with one view entry
    /// per item and nothing appended, or their schema rules differ (the caller then
    /// appends `other`'s items built).
    pub fn followed_by(&self, other: &Unread) -> Option<Unread> {
        if self.rule != other.rule {
            return None;
        }
        let (a, b) = (self.body()?, other.body()?);
        let (a_view, b_view) = (
            self.view.read_lock::<Array>()?,
            other.view.read_lock::<Array>()?,
        );
        let view = a_view.iter().chain(b_view.iter()).cloned().collect();
        let body = |text: &mut String| {
            text.push_str(a);
            if !a.is_empty() && !b.is_empty() {
                text.push(',');
            }
            text.push_str(b);
        };
        // Both lists: as deep as the deeper one.
        Some(self.with_body(body, view, Some(self.nesting.max(other.nesting))))
    }

    /// The list's text between its brackets (see [`list_body`]), when the list is in our
    /// layout with nothing appended and its view holds one entry per item (it has an
    /// outline).
    fn body(&self) -> Option<&str> {
        if self.outline.is_none() || !self.appended.is_empty() || !self.is_canonical() {
            return None;
        }
        list_body(&self.text[self.range()?])
    }

    /// Each item's text, as [`Unread::body`] allows, one per view entry.
    fn item_texts(&self) -> Option<Vec<&str>> {
        let count = self.view.read_lock::<Array>()?.len();
        let items = split_items(self.body()?)?;
        (items.len() == count).then_some(items)
    }

    /// A list unread like this one, whose text between its brackets `body` writes (items
    /// in our layout, each after a line break and its indent, separated by commas) and
    /// whose view is `view`: a document of its own holds it under this field's name. Its
    /// nesting is `nesting`, or measured from the text.
    fn with_body(
        &self,
        body: impl FnOnce(&mut String),
        view: Array,
        nesting: Option<usize>,
    ) -> Unread {
        let name = serde_json::to_string(&*self.name).unwrap_or_default();
        let mut text = format!("{{\n  {name}: [");
        let start = text.len() - 1;
        body(&mut text);
        if text.len() == start + 1 {
            text.push(']');
        } else {
            text.push('\n');
            text.push_str(&"  ".repeat(FIELD_DEPTH));
            text.push(']');
        }
        let range = start..text.len();
        let nesting = nesting.unwrap_or_else(|| canonical_nesting(&text[range.clone()]));
        text.push_str("\n}\n");
        let ranges = std::collections::HashMap::from([(self.name.to_string(), range)]);
        Unread {
            name: self.name.clone(),
            text: Rc::new(text),
            ranges: Rc::new(TextRanges::from(Some(ranges))),
            canonical: Rc::new(std::cell::OnceCell::from(true)),
            view: Rc::new(Dynamic::from_array(view)),
            rule: self.rule.clone(),
            outline: self.outline.clone(),
            appended: Rc::new(Array::new()),
            nesting,
        }
    }

    /// Whether `other` is the same field of the same text.
    pub fn same_as(&self, other: &Unread) -> bool {
        self.name == other.name
            && (Rc::ptr_eq(&self.text, &other.text) || self.text == other.text)
            && (Rc::ptr_eq(&self.appended, &other.appended)
                || (self.appended.len() == other.appended.len()
                    && self
                        .appended
                        .iter()
                        .zip(other.appended.iter())
                        .all(|(a, b)| crate::engine::doc::same(a, b))))
    }

    /// The error a script gets when it uses the field.
    pub fn refusal(&self) -> String {
        format!(
            "field `{}` is declared unread by this phase (`unread:` in its agent table): \
             remove it there to read it (`to_json()` prints it; an unread list answers \
             only `len()`, `string_set`, `max_suffix`, `has_item`, `unseen_items`, and \
             `join_field` of an item field its schema types as a scalar; `push`, `+=` \
             and `append:` add to it)",
            self.name
        )
    }
}

/// Whether `value` may hold a field left unread (a custom or shared value): the cheap
/// test in front of `read_lock::<Unread>()` on hot paths.
pub fn may_be_unread(value: &Dynamic) -> bool {
    value.is_variant() || value.is_shared()
}

/// The number of items of `value` when it is a list, built or left unread (an unread
/// list is counted from its scan when its rule checks each item, else parsed); `None`
/// for anything else.
pub fn list_len(value: &Dynamic) -> Option<usize> {
    if let Some(items) = value.read_lock::<Array>() {
        return Some(items.len());
    }
    let unread = value.read_lock::<Unread>()?;
    if !unread.is_list() {
        return None;
    }
    match unread.item_count() {
        Ok(n) => usize::try_from(n).ok(),
        Err(_) => unread
            .value()
            .ok()
            .and_then(|v| v.read_lock::<Array>().map(|a| a.len())),
    }
}

/// The value of `value` when it is a field left unread, parsed now from its text;
/// `None` for any other value. The one way the engine's walks over values (conversion,
/// comparison, nesting, changes in place) see through an unread field; printing writes
/// it from its text instead ([`Unread::reprint`]).
pub fn parsed(value: &Dynamic) -> Option<Result<Dynamic, String>> {
    if !may_be_unread(value) {
        return None;
    }
    value.read_lock::<Unread>().map(|unread| unread.value())
}

/// Replaces a field left unread by its value, parsed (before the engine changes it in
/// place: `set:` below it, `append:`); anything else is left alone.
pub fn materialize(value: &mut Dynamic) -> Result<(), String> {
    if let Some(parsed) = parsed(value) {
        *value = parsed?;
    }
    Ok(())
}

/// Replaces each field of `map` left unread by its value, parsed, unless `keep` holds for
/// its name. Fields of the same text are parsed in one pass over it (a state's two
/// pools: one scan of the document, not two).
pub fn materialize_fields(map: &mut Map, keep: impl Fn(&str) -> bool) -> Result<(), String> {
    let mut wanted: Vec<(String, Unread)> = Vec::new();
    for (key, value) in map.iter() {
        if !keep(key.as_str())
            && may_be_unread(value)
            && let Some(field) = value.read_lock::<Unread>()
        {
            wanted.push((key.to_string(), field.clone()));
        }
    }
    while let Some((_, first)) = wanted.first() {
        let text = first.text.clone();
        let (same_text, rest): (Vec<_>, Vec<_>) = wanted
            .into_iter()
            .partition(|(_, f)| Rc::ptr_eq(&f.text, &text));
        wanted = rest;
        let mut names: Vec<&str> = same_text.iter().map(|(_, f)| &*f.name).collect();
        names.sort_unstable();
        names.dedup();
        let parsed = parse_fields(&text, &names)?;
        // (One field may sit at two keys: each gets its value.)
        for (key, field) in same_text {
            let value = parsed
                .get(&*field.name)
                .cloned()
                .ok_or_else(|| no_longer_parses(&field.name))?;
            map.insert(key.as_str().into(), field.with_appended_items(value));
        }
    }
    Ok(())
}

/// The top-level fields `names` of a document's text, parsed.
fn parse_fields(text: &str, names: &[&str]) -> Result<Map, String> {
    parse_json_fields(text, names)
        .ok()
        .and_then(|doc| doc.try_cast::<Map>())
        .ok_or_else(|| no_longer_parses(&names.join("`, `")))
}

/// The error of a field whose text parsed once and no longer does (a bug).
fn no_longer_parses(name: &str) -> String {
    format!("field `{name}` no longer parses from its text")
}

/// Parses a JSON text into a script value, leaving each top-level field named in
/// `unread` as an [`Unread`] scanned against its schema rule (`None`: no rule). The
/// whole text goes through one deserializer, so syntax errors and serde's nesting limit
/// are reported exactly as a full parse reports them. A text that is not an object is
/// parsed whole.
pub fn parse_json_leaving(
    text: &Rc<String>,
    unread: &[(&str, Option<&FieldRule>)],
) -> Result<Dynamic, serde_json::Error> {
    let ranges = Rc::new(TextRanges::new());
    let (value, places) = parse_top_level_placed(
        text.as_str(),
        Leaving {
            text,
            ranges: &ranges,
            unread,
        },
    )?;
    // The unread fields' places, from where the parse found the keys (else found by a
    // scan of the text when first asked for).
    if let Some(found) =
        places.and_then(|at| crate::engine::reprint::ranges_from_key_places(text, &at))
    {
        let _ = ranges.set(Some(found));
    }
    Ok(value)
}

/// No rule: a value of any type, nothing to build.
static ANY: std::sync::LazyLock<FieldRule> = std::sync::LazyLock::new(FieldRule::default);

/// The top-level fields: unread ones scanned, the others built.
struct Leaving<'a> {
    text: &'a Rc<String>,
    ranges: &'a Rc<TextRanges>,
    unread: &'a [(&'a str, Option<&'a FieldRule>)],
}

impl<'de> TopLevelFields<'de> for Leaving<'_> {
    fn read<A: MapAccess<'de>>(
        &self,
        key: &str,
        entries: &mut A,
    ) -> Result<Option<Dynamic>, A::Error> {
        let Some((name, rule)) = self.unread.iter().find(|(f, _)| *f == key) else {
            return entries.next_value_seed(ScriptValue).map(Some);
        };
        let rule = rule.unwrap_or(&ANY);
        let deepest = std::cell::Cell::new(0);
        let depth = Depth {
            level: 0,
            deepest: &deepest,
        };
        let view = entries.next_value_seed(Checked::new(rule, depth))?;
        Ok(Some(Dynamic::from(Unread {
            name: (*name).into(),
            text: self.text.clone(),
            ranges: self.ranges.clone(),
            canonical: Rc::default(),
            view: Rc::new(view),
            rule: Rc::new(rule.clone()),
            outline: outline(rule),
            appended: Rc::default(),
            nesting: deepest.get(),
        })))
    }
}

/// The item fields of a list rule whose values its scan keeps exactly: scalars its item
/// rule types (the scan builds every scalar; a value of another kind fails the check).
/// `None` when the rule does not check each item (the scan keeps no entry per item).
/// An unread list under `rule` answers `len()` when this is `Some`, and `join_field` of
/// the fields listed (`metaopt machine check` holds tables to the same).
pub fn answered_item_fields(rule: &FieldRule) -> Option<Vec<String>> {
    outline(rule).map(|fields| fields.to_vec())
}

fn outline(rule: &FieldRule) -> Option<Rc<[String]>> {
    use crate::machine::model::TypeSpec;
    let items = rule.items.as_deref()?;
    let scalar = |t: &String| matches!(t.as_str(), "string" | "integer" | "number" | "boolean");
    let exact = |r: &FieldRule| match &r.types {
        TypeSpec::Any => false,
        TypeSpec::One(t) => scalar(t),
        // `type: []` constrains nothing (the checker skips an empty list).
        TypeSpec::Many(ts) => !ts.is_empty() && ts.iter().all(|t| scalar(t) || t == "null"),
    };
    Some(
        items
            .fields
            .iter()
            .filter(|(_, r)| exact(r))
            .map(|(name, _)| name.clone())
            .collect(),
    )
}

/// The depth of a document's top-level field in the pretty layout.
const FIELD_DEPTH: usize = 1;

/// Appends `text`, a value's text in our layout at depth `from`, as it reads at depth
/// `to`: each line after the first indented `to - from` levels further, or less (a JSON
/// text holds a line break only between tokens). `false`, with `out` as it was, when a
/// line is not indented deep enough to lose that much.
fn reindent_lines(out: &mut String, text: &str, from: usize, to: usize) -> bool {
    if from == to {
        out.push_str(text);
        return true;
    }
    let start = out.len();
    let bytes = text.as_bytes();
    let extra = "  ".repeat(to.saturating_sub(from));
    let fewer = 2 * from.saturating_sub(to);
    // (Line breaks found by memchr, and room for the text made once: a pool is 10 MB;
    // counted first only when lines grow. The indent dropped is checked without a
    // `memcmp` call a line.)
    let grown = if extra.is_empty() {
        0
    } else {
        memchr::memchr_iter(b'\n', bytes).count() * extra.len()
    };
    out.reserve(text.len() + grown);
    let mut line = 0;
    for at in memchr::memchr_iter(b'\n', bytes) {
        out.push_str(&text[line..=at]);
        out.push_str(&extra);
        let dropped = bytes.get(at + 1..at + 1 + fewer);
        if !dropped.is_some_and(crate::engine::reprint::all_spaces) {
            out.truncate(start);
            return false;
        }
        line = at + 1 + fewer;
    }
    out.push_str(&text[line..]);
    true
}

/// How deeply arrays and objects nest in `value`, a list's or map's text in our layout
/// at [`FIELD_DEPTH`] (as [`crate::engine::doc::nesting`] measures its parse), read
/// from its indentation: every entry of a container is on a line of its own one level
/// deeper, so a line indented to level `l` is inside `l - FIELD_DEPTH` of the value's
/// containers, and one more when it holds an empty one (`[]`, `{}`: a string ends in
/// `"`, a number or literal in neither bracket).
fn canonical_nesting(value: &str) -> usize {
    let bytes = value.as_bytes();
    let mut deepest = usize::from(bytes.first().is_some_and(|b| matches!(b, b'[' | b'{')));
    for at in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[at + 1..];
        let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
        let indent = line.iter().take_while(|b| **b == b' ').count();
        let content = line.strip_suffix(b",").unwrap_or(line);
        let empty = content.ends_with(b"[]") || content.ends_with(b"{}");
        deepest = deepest.max((indent / 2).saturating_sub(FIELD_DEPTH) + usize::from(empty));
    }
    deepest
}

/// The text of a list in our layout at [`FIELD_DEPTH`] between its brackets: `""` for
/// `[]`, else each item after a line break and its indent, separated by commas.
fn list_body(list: &str) -> Option<&str> {
    if list == "[]" {
        return Some("");
    }
    let close = format!("\n{}]", "  ".repeat(FIELD_DEPTH));
    list.strip_prefix('[')?.strip_suffix(close.as_str())
}

/// The text of each item of a list's [`list_body`]: an item starts a line indented one
/// level deeper than the list (its closing bracket starts such a line too, and nothing
/// else does), and runs to the comma before the next item or to the end.
fn split_items(body: &str) -> Option<Vec<&str>> {
    let pad = format!("\n{}", "  ".repeat(FIELD_DEPTH + 1));
    let bytes = body.as_bytes();
    let starts: Vec<usize> = memchr::memmem::find_iter(bytes, pad.as_bytes())
        .map(|at| at + pad.len())
        .filter(|&at| !matches!(bytes.get(at), None | Some(b' ' | b'}' | b']')))
        .collect();
    let mut items = Vec::with_capacity(starts.len());
    for (i, &at) in starts.iter().enumerate() {
        let end = match starts.get(i + 1) {
            // `,` then the next item's line break and indent.
            Some(&next) => {
                let end = next.checked_sub(pad.len() + 1)?;
                (bytes.get(end) == Some(&b',')).then_some(end)?
            }
            None => body.len(),
        };
        items.push(body.get(at..end)?);
    }
    (body.is_empty() || starts.first() == Some(&pad.len())).then_some(items)
}

/// The text of each item of `list`, a list's text in our layout at [`FIELD_DEPTH`].
#[cfg(test)]
fn item_texts(list: &str) -> Option<Vec<&str>> {
    split_items(list_body(list)?)
}

/// Goes over a value without building it, through serde's own recursion and number
/// parsing: its nesting limit and its number range (`1e400` is an error) are met as a
/// parse meets them, which `IgnoredAny` (serde_json's `ignore_value`) does not do.
struct Skip<'c>(Depth<'c>);

/// Where a scan is in the nesting of a value (`level` containers deep), and the deepest
/// nesting seen, for [`Unread::nesting`].
#[derive(Clone, Copy)]
struct Depth<'c> {
    level: usize,
    deepest: &'c std::cell::Cell<usize>,
}

impl<'c> Depth<'c> {
    /// Into a container at this level: its content is one level deeper.
    fn enter(self) -> Depth<'c> {
        self.reach(1);
        Depth {
            level: self.level + 1,
            deepest: self.deepest,
        }
    }

    /// Notes a value `nesting` deep at this level.
    fn reach(self, nesting: usize) {
        self.deepest
            .set(self.deepest.get().max(self.level + nesting));
    }
}

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
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
        let inner = self.0.enter();
        while seq.next_element_seed(Skip(inner))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let inner = self.0.enter();
        while entries.next_key::<IgnoredAny>()?.is_some() {
            entries.next_value_seed(Skip(inner))?;
        }
        Ok(())
    }
}

/// Builds of a value what its schema rule looks at, so that checking the result gives
/// exactly the issues checking the whole value would: scalars whole; the listed fields
/// of an object; the items of an array; a rule that looks at a container as a whole
/// (`unique`, `non_empty`, `enum`) gets it whole; anything else an empty container of
/// the same kind (its type is all the rule checks).
struct Checked<'r> {
    rule: &'r FieldRule,
    depth: Depth<'r>,
}

impl<'r> Checked<'r> {
    /// A scan of a value under `rule`, `depth` deep in the field.
    fn new(rule: &'r FieldRule, depth: Depth<'r>) -> Self {
        Checked { rule, depth }
    }

    /// Whether the rule looks at the value as a whole: [`whole_rule`].
    fn whole(&self) -> bool {
        whole_rule(self.rule)
    }
}

/// Whether `rule` looks at a value as a whole (beyond its type, its listed fields and
/// its items). Every constraint is named, so that a new one cannot be missed here.
fn whole_rule(rule: &FieldRule) -> bool {
    let FieldRule {
        types: _,          // the kind: a placeholder has it
        required: _,       // checked on the parent map
        fields: _,         // built
        items: _,          // built
        no_placeholder: _, // strings: scalars are built whole
        no_whitespace: _,  // strings
        pattern: _,        // strings
        min: _,            // numbers
        max: _,            // numbers
        exclusive_min: _,  // numbers
        non_empty,
        one_of,
        unique,
    } = rule;
    *unique || *non_empty || !one_of.is_empty()
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
            let whole = ScriptValue.visit_seq(seq)?;
            self.depth
                .reach(crate::engine::doc::nesting(&whole, usize::MAX));
            return Ok(whole);
        }
        let inner = self.depth.enter();
        let mut items = Array::new();
        match &self.rule.items {
            Some(rule) => {
                while let Some(item) = seq.next_element_seed(Checked::new(rule, inner))? {
                    items.push(item);
                }
            }
            None => while seq.next_element_seed(Skip(inner))?.is_some() {},
        }
        Ok(Dynamic::from_array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Dynamic, A::Error> {
        if self.whole() {
            let whole = ScriptValue.visit_map(entries)?;
            self.depth
                .reach(crate::engine::doc::nesting(&whole, usize::MAX));
            return Ok(whole);
        }
        let inner = self.depth.enter();
        let mut out = Map::new();
        while let Some(key) = entries.next_key_seed(MapKey)? {
            match self.rule.fields.get(key.as_str()) {
                Some(rule) => {
                    let value = entries.next_value_seed(Checked::new(rule, inner))?;
                    out.insert(key, value);
                }
                None => entries.next_value_seed(Skip(inner))?,
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

    /// `script` run with `state` bound (or the error's text).
    /// (Compiled as a table's script is: with the library functions it calls.)
    fn eval_with(machine: &Machine, state: Dynamic, script: &str) -> Result<Dynamic, String> {
        let mut scope = rhai::Scope::new();
        scope.push("state", state);
        let ast = machine.sandbox.compile(script, &["state".to_string()])?;
        machine.sandbox.eval(&mut scope, &ast)
    }

    /// [`eval_with`], its result as JSON.
    fn eval_json(
        machine: &Machine,
        state: &Dynamic,
        script: &str,
    ) -> Result<serde_json::Value, String> {
        eval_with(machine, state.clone(), script).map(|v| to_json(&v))
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
    fn materializing_builds_each_unread_field_but_those_kept_even_one_at_two_keys() {
        let machine = Machine::load(None).expect("embedded tables load");
        let text = state_text(RICH, r#"[{"proposal_id": "n-1"}]"#);
        let whole = parse_json(&text).expect("parses");
        let mut left = leaving(&machine, &text).expect("parses");
        let mut map = left.write_lock::<Map>().expect("a map");
        let copy = map["next_proposals"].clone();
        map.insert("next_copy".into(), copy);
        materialize_fields(&mut map, |k| k == "current_proposals").expect("builds");
        assert!(map["current_proposals"].is::<Unread>(), "kept unread");
        for key in ["next_proposals", "next_copy"] {
            assert!(!map[key].is::<Unread>(), "{key} built");
            let want = whole.read_lock::<Map>().expect("a map")["next_proposals"].clone();
            assert!(same(&map[key], &want), "{key}");
        }
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
            r#"[{"proposal_id": "p", "x": {"y": 1e400}}]"#.to_string(),
            r#"[{"proposal_id": "p", "x": ["\ud800", -1e-400, 18446744073709551616]}]"#.to_string(),
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
            ("state.next_proposals.filter(|p| true)", "unread:"),
            ("state.next_proposals.to_string()", "`next_proposals`"),
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

    #[test]
    fn a_state_with_unread_fields_prints_as_json_from_a_script_as_the_whole_state() {
        let machine = Machine::load(None).expect("embedded tables load");
        let text = state_text(RICH, "[]");
        let run = |state: Dynamic| {
            let mut scope = rhai::Scope::new();
            scope.push("state", state);
            machine
                .sandbox
                .engine
                .eval_with_scope::<String>(&mut scope, "state.to_json()")
                .expect("prints")
        };
        let whole = run(parse_json(&text).expect("parses"));
        assert_eq!(whole, run(leaving(&machine, &text).expect("parses")));
        assert!(whole.contains("\"proposal_id\": \"p-2\""), "{whole}");
    }

    #[test]
    fn list_len_counts_built_and_unread_lists_alike() {
        let machine = Machine::load(None).expect("embedded tables load");
        let text = state_text(RICH, r#"[{"proposal_id": "n-1"}, {"proposal_id": "n-2"}]"#);
        let field = |doc: &Dynamic, key: &str| doc.read_lock::<Map>().unwrap()[key].clone();
        let whole = parse_json(&text).expect("parses");
        let left = leaving(&machine, &text).expect("parses");
        for key in ["current_proposals", "next_proposals"] {
            let built = list_len(&field(&whole, key));
            assert!(built.is_some(), "{key}");
            assert!(may_be_unread(&field(&left, key)), "{key} left unread");
            assert_eq!(list_len(&field(&left, key)), built, "{key}");
        }
        assert_eq!(list_len(&field(&whole, "machine_state")), None);
        assert_eq!(list_len(&Dynamic::from_map(Map::new())), None);
    }

    #[test]
    fn an_unread_list_answers_its_length_and_scalar_item_fields_as_the_whole_list() {
        let machine = Machine::load(None).expect("embedded tables load");
        let text = state_text(RICH, r#"[{"proposal_id": "n-1"}, {"proposal_id": "n-2"}]"#);
        let eval = |state: &Dynamic, script: &str| eval_json(&machine, state, script);
        let whole = parse_json(&text).expect("parses");
        let left = leaving(&machine, &text).expect("parses");
        for script in [
            "state.current_proposals.len()",
            "state.next_proposals.len()",
            r#"state.current_proposals.join_field("proposal_id", ", ")"#,
            r#"state.next_proposals.join_field("proposal_id", "|")"#,
        ] {
            let expected = eval(&whole, script).expect(script);
            assert_eq!(eval(&left, script), Ok(expected), "{script}");
        }
        // A field the scan did not keep is refused, never answered from the outline.
        let refused = eval(
            &left,
            r#"state.current_proposals.join_field("rationale", ", ")"#,
        );
        assert!(refused.is_err_and(|e| e.contains("`current_proposals`")));
        // An empty pool answers as an empty list does.
        let text = state_text("[]", "[]");
        let (whole, left) = (
            parse_json(&text).unwrap(),
            leaving(&machine, &text).unwrap(),
        );
        for script in [
            "state.current_proposals.len()",
            r#"state.next_proposals.join_field("proposal_id", ", ")"#,
        ] {
            assert_eq!(eval(&left, script), eval(&whole, script), "{script}");
        }
        // A field whose rule does not check items answers nothing.
        let left = {
            let shared = machine.sandbox.shared.borrow();
            let built = shared.schemas["state"]
                .get(&machine.sandbox.engine)
                .expect("state schema builds");
            let rule = built.schema.table.fields.get("proposal_cycle");
            parse_json_leaving(&Rc::new(text.clone()), &[("proposal_cycle", rule)]).expect("parses")
        };
        let refused = eval(&left, "state.proposal_cycle.len()");
        assert!(refused.is_err_and(|e| e.contains("`proposal_cycle`")));
    }

    #[test]
    fn an_unread_list_grown_by_append_answers_prints_and_checks_as_the_grown_whole_list() {
        let machine = Machine::load(None).expect("embedded tables load");
        let grown = |pool: &str| {
            format!(
                r#"[{{"proposal_id": "c-9", "source_file": "bg-3.json", "deep": [[{{"x": [1.5]}}]]}}, {{"proposal_id": "{pool}-7"}}]"#
            )
        };
        let pools = [
            "[]".to_string(),
            RICH.to_string(),
            // Items without the field, of other kinds, and a field repeated (the last wins).
            r#"[{"proposal_id": "n-1", "source_file": "bg-1.json", "source_file": "bg-2.json"},
                {"proposal_id": "n-12", "source_file": 4}, {"proposal_id": "n-3"}]"#
                .to_string(),
            // Nested lists in the last item: the closing brackets are not the list's.
            r#"[{"proposal_id": "n-2", "x": [[1], []]}]"#.to_string(),
        ];
        let scripts = [
            "state.current_proposals.len()",
            "state.next_proposals.len()",
            r#"state.current_proposals.string_set("source_file").keys()"#,
            r#"state.next_proposals.string_set("source_file").keys()"#,
            r#"state.next_proposals.string_set("proposal_id").keys()"#,
            r#"state.current_proposals.max_suffix("proposal_id", "c-")"#,
            r#"state.next_proposals.max_suffix("proposal_id", "n-")"#,
            r#"state.next_proposals.max_suffix("source_file", "bg-")"#,
            r#"state.next_proposals.join_field("proposal_id", ",")"#,
            r#"state.current_proposals.join_field("proposal_id", ",")"#,
            r#"state.current_proposals.to_json()"#,
            r#"state.next_proposals.to_json()"#,
            r#"[state.next_proposals.has_item("proposal_id", "n-12"), state.next_proposals.has_item("proposal_id", "n-7")]"#,
            r#"[state.current_proposals.has_item("proposal_id", "c-9"), state.current_proposals.has_item("proposal_id", "p-2"), state.current_proposals.has_item("source_file", 4)]"#,
            r#"[state.next_proposals.has_item("source_file", 4), state.next_proposals.has_item("source_file", 4.0), state.next_proposals.has_item("x", ())]"#,
            r#"state.current_proposals.unseen_items("proposal_id", #{"p-1": true})"#,
            r#"let k = state.current_proposals.unseen_items("proposal_id", #{});
               k += state.next_proposals.unseen_items("proposal_id", k.string_set("proposal_id"));
               [k.len(), k.join_field("proposal_id", ","), k.to_json(), k.string_set("proposal_id").keys()]"#,
            r#"let k = state.next_proposals.unseen_items("proposal_id", #{"n-3": true});
               k += state.current_proposals;
               #{ filtered: k, empty: state.next_proposals.unseen_items("proposal_id", state.next_proposals.string_set("proposal_id")) }.to_json()"#,
            r#"let k = state.current_proposals.unseen_items("proposal_id", #{}); k += [#{ proposal_id: "y" }]; [k, k.to_json()]"#,
            r#"let s = state.rollover_survivors(); [s.len(), s.to_json(), s.proposal_ids()]"#,
            // A built list and an unread one joined by `append`, either way round.
            r#"let k = [#{ proposal_id: "x" }]; k.append(state.next_proposals.unseen_items("proposal_id", #{})); [k, k.len()]"#,
            r#"let k = state.current_proposals.unseen_items("proposal_id", #{}); k.append(state.next_proposals); k.append([#{ proposal_id: "z" }]); [k, k.len(), k.to_json()]"#,
        ];
        let eval = |state: &Dynamic, script: &str| eval_json(&machine, state, script);
        // Each state as built here (pools in another layout), and printed in ours (pools
        // copied, indented further, and searched by line).
        let texts = pools.iter().flat_map(|next| {
            ["[]", RICH].into_iter().flat_map(move |current| {
                let text = state_text(current, next);
                let ours = print_pretty(&parse_json(&text).expect("parses"))
                    .expect("prints")
                    .text;
                [(next.clone(), text), (next.clone(), ours)]
            })
        });
        for (next, text) in texts {
            {
                let mut whole = parse_json(&text).expect("parses");
                let mut left = leaving(&machine, &text).expect("parses");
                // Before and after items are appended (as `append:` does).
                for round in 0..2 {
                    for script in scripts {
                        let want = eval(&whole, script).expect(script);
                        assert_eq!(
                            eval(&left, script),
                            Ok(want),
                            "{script} on {next} ({round})"
                        );
                    }
                    let (a, b) = (print_pretty(&whole).unwrap(), print_pretty(&left).unwrap());
                    assert_eq!(a.text, b.text, "{next} ({round})");
                    assert_eq!(
                        crate::engine::pretty::compact(&whole),
                        crate::engine::pretty::compact(&left)
                    );
                    assert_eq!(to_json(&whole), to_json(&left));
                    assert!(same(&whole, &left) && same(&left, &whole));
                    assert_eq!(issues(&machine, &whole), issues(&machine, &left));
                    assert_eq!(
                        crate::engine::doc::nesting(&whole, 127),
                        crate::engine::doc::nesting(&left, 127)
                    );
                    for pool in POOLS {
                        let at = |doc: &Dynamic, depth| {
                            let value = doc.read_lock::<Map>().expect("a map")[pool].clone();
                            crate::engine::pretty::pretty_at(&value, depth, &mut true)
                        };
                        for depth in [0, 1, 2, 3] {
                            assert_eq!(at(&whole, depth), at(&left, depth), "{pool} at {depth}");
                        }
                    }
                    for pool in POOLS {
                        let items: Array = serde_json::from_str::<serde_json::Value>(&grown(pool))
                            .map(|v| crate::engine::doc::from_json(&v).cast::<Array>())
                            .expect("items");
                        for doc in [&mut whole, &mut left] {
                            let mut map = doc.write_lock::<Map>().expect("a map");
                            let target = map.get_mut(pool).expect("pool");
                            crate::engine::phase::append_path(target, &[], items.clone())
                                .expect("appends");
                        }
                        let map = left.read_lock::<Map>().expect("a map");
                        assert!(map[pool].is::<Unread>(), "{pool} still unread");
                    }
                }
                // A broken appended item is found as in the whole list.
                for doc in [&mut whole, &mut left] {
                    let mut map = doc.write_lock::<Map>().expect("a map");
                    let target = map.get_mut("next_proposals").expect("pool");
                    crate::engine::phase::append_path(target, &[], vec![Dynamic::from(3_i64)])
                        .expect("appends");
                }
                let found = issues(&machine, &left);
                assert!(!found.is_empty());
                assert_eq!(issues(&machine, &whole), found);
                // Materialized, the grown list is the whole one.
                let mut map = left.write_lock::<Map>().expect("a map");
                materialize_fields(&mut map, |_| false).expect("builds");
                let want = whole.read_lock::<Map>().expect("a map");
                for pool in POOLS {
                    assert!(same(&map[pool], &want[pool]), "{pool}");
                }
            }
        }
    }

    #[test]
    fn pushing_to_an_unread_list_keeps_it_unread_and_gives_the_pushed_whole_list() {
        let machine = Machine::load(None).expect("embedded tables load");
        let script =
            r#"let p = state.next_proposals; p.push(#{proposal_id: "z-1", k: [1]}); p.push(3); p"#;
        for pool in ["[]", RICH] {
            let text = state_text(RICH, pool);
            for text in [
                text.clone(),
                print_pretty(&parse_json(&text).unwrap()).unwrap().text,
            ] {
                let run = |state: Dynamic| eval_with(&machine, state, script).expect(script);
                let whole = run(parse_json(&text).expect("parses"));
                let left = run(leaving(&machine, &text).expect("parses"));
                assert!(left.is::<Unread>(), "still unread");
                // Unlike the list before the pushes, and like itself, either way round.
                let before = leaving(&machine, &text).expect("parses");
                let before = before.read_lock::<Map>().expect("a map")["next_proposals"].clone();
                assert!(!same(&left, &before) && !same(&before, &left));
                assert!(same(&left, &whole) && same(&whole, &left) && same(&left, &left));
                assert_eq!(to_json(&whole), to_json(&left));
                assert_eq!(
                    crate::engine::pretty::pretty_at(&whole, 1, &mut true),
                    crate::engine::pretty::pretty_at(&left, 1, &mut true)
                );
            }
        }
    }

    #[test]
    fn a_selection_of_an_unread_list_in_our_layout_copies_its_items_texts() {
        let machine = Machine::load(None).expect("embedded tables load");
        let next = r#"[{"proposal_id": "p-2", "x": [[1], {"a": []}]}, 7, {"proposal_id": "n-1"}, {"proposal_id": "p-1"}]"#;
        let text = state_text(RICH, next);
        let ours = print_pretty(&parse_json(&text).unwrap()).unwrap().text;
        let script = r#"let k = state.current_proposals.unseen_items("proposal_id", #{"p-1": true});
                        k += state.next_proposals.unseen_items("proposal_id", k.string_set("proposal_id"));
                        k"#;
        let whole = eval_with(&machine, parse_json(&ours).unwrap(), script).expect(script);
        let left = eval_with(&machine, leaving(&machine, &ours).unwrap(), script).expect(script);
        let kept = left.read_lock::<Unread>().expect("still unread").clone();
        // Copied from the text (nothing appended, built from a parse), and the same list.
        assert!(kept.appended.is_empty() && kept.is_canonical());
        assert_eq!(kept.item_count(), Ok(4));
        assert_eq!(to_json(&whole), to_json(&left));
        assert_eq!(
            to_json(&left),
            serde_json::json!([{"proposal_id": "p-2", "extra": {}}, 7, {"proposal_id": "n-1"}, {"proposal_id": "p-1"}])
        );
        // As deep as the items kept (the next pool's deeper `p-2` was not).
        let depth = |v: &Dynamic| crate::engine::doc::nesting(v, 127);
        assert_eq!((depth(&whole), depth(&left)), (3, 3));
        // Joined to a deeper list, as deep as that one.
        let script = r#"let k = state.current_proposals.unseen_items("proposal_id", #{"p-1": true});
                        k.append(state.next_proposals.unseen_items("proposal_id", #{}));
                        k"#;
        let whole = eval_with(&machine, parse_json(&ours).unwrap(), script).expect(script);
        let left = eval_with(&machine, leaving(&machine, &ours).unwrap(), script).expect(script);
        assert!(
            left.read_lock::<Unread>()
                .is_some_and(|k| k.appended.is_empty())
        );
        assert_eq!((depth(&whole), depth(&left)), (5, 5));
        for depth in [0, 1, 2] {
            assert_eq!(
                crate::engine::pretty::pretty_at(&whole, depth, &mut true),
                crate::engine::pretty::pretty_at(&left, depth, &mut true)
            );
        }
        // Split at its items' own lines: nested brackets and scalars are not items.
        let list = &kept.text[kept.range().expect("range")];
        assert_eq!(item_texts(list).map(|items| items.len()), Some(4));
        assert_eq!(item_texts("[]"), Some(vec![]));
        assert_eq!(
            item_texts("[\n    1,\n    [\n      2\n    ]\n  ]"),
            Some(vec!["1", "[\n      2\n    ]"])
        );
        assert_eq!(item_texts("[1, 2]"), None);
    }

    #[test]
    fn a_value_in_our_layout_is_as_deep_as_its_indentation_says() {
        for value in [
            "[]",
            "{}",
            "[1]",
            "[[]]",
            r#"[{"a": []}]"#,
            r#"[{"a": [1, {"b": {}}], "c": "x[]"}, "{}", 2, [[[3]]]]"#,
            r#"{"a": {"b": []}}"#,
        ] {
            let parsed = parse_json(value).expect("parses");
            let ours =
                crate::engine::pretty::pretty_at(&parsed, FIELD_DEPTH, &mut true).expect("prints");
            assert_eq!(
                canonical_nesting(&ours),
                crate::engine::doc::nesting(&parsed, 127),
                "{value}"
            );
        }
    }

    #[test]
    fn an_unread_field_is_as_deep_as_its_value() {
        let machine = Machine::load(None).expect("embedded tables load");
        for pool in [
            "[]",
            r#"[{"proposal_id": "p", "x": []}]"#,
            r#"[{"proposal_id": "p", "x": [[{"y": {}}]], "z": "[[[[[["}]"#,
            r#"[{"proposal_id": "p"}, [[[]]], {"proposal_id": {"a": [{}]}}]"#,
        ] {
            let text = state_text(pool, pool);
            let whole = parse_json(&text).expect("parses");
            let left = leaving(&machine, &text).expect("parses");
            let depth = |doc: &Dynamic| {
                let map = doc.read_lock::<Map>().expect("a map");
                let pool = &map["current_proposals"];
                (
                    crate::engine::doc::nesting(pool, 127),
                    crate::engine::doc::nesting(doc, 127),
                )
            };
            assert_eq!(depth(&whole), depth(&left), "{pool}");
        }
    }
}
