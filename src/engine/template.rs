//! Value templates: YAML values in tables whose strings may be rhai.
//! `= expr` is an expression; a string holding `${…}` is an interpolated
//! string; anything else is a literal. Maps and lists are walked
//! recursively. Templates compile once, when the tables load.

use crate::engine::sandbox::{Sandbox, to_json};
use rhai::{AST, Scope};
use serde_json::Value;
use serde_yaml::Value as Yaml;

/// A compiled value template.
#[derive(Debug, Clone)]
pub enum Template {
    /// A literal value.
    Literal(Value),
    /// A rhai expression or interpolated string, with its source.
    Script(Box<AST>, String),
    /// A map of templates.
    Map(Vec<(String, Template)>),
    /// A list of templates.
    List(Vec<Template>),
}

impl Template {
    /// Compiles a YAML value against the names in scope.
    pub fn compile(sandbox: &Sandbox, yaml: &Yaml, names: &[String]) -> Result<Self, String> {
        Ok(match yaml {
            Yaml::String(s) => {
                if let Some(expr) = s.strip_prefix('=') {
                    Template::Script(Box::new(sandbox.compile(expr.trim(), names)?), s.clone())
                } else if s.contains("${") {
                    if s.contains('`') {
                        return Err(format!(
                            "interpolated string must not contain a backtick: {s:?}"
                        ));
                    }
                    Template::Script(
                        Box::new(sandbox.compile(&format!("`{s}`"), names)?),
                        s.clone(),
                    )
                } else {
                    Template::Literal(Value::String(s.clone()))
                }
            }
            Yaml::Mapping(m) => {
                let mut entries = Vec::with_capacity(m.len());
                for (k, v) in m {
                    let key = k
                        .as_str()
                        .ok_or_else(|| format!("map key must be a string: {k:?}"))?;
                    entries.push((key.to_string(), Template::compile(sandbox, v, names)?));
                }
                Template::Map(entries)
            }
            Yaml::Sequence(items) => Template::List(
                items
                    .iter()
                    .map(|i| Template::compile(sandbox, i, names))
                    .collect::<Result<_, _>>()?,
            ),
            Yaml::Tagged(t) => Template::compile(sandbox, &t.value, names)?,
            other => Template::Literal(serde_json::to_value(other).map_err(|e| e.to_string())?),
        })
    }

    /// Evaluates the template to JSON.
    pub fn eval(&self, sandbox: &Sandbox, scope: &mut Scope) -> Result<Value, String> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Script(ast, src) => to_json(
                &sandbox
                    .eval(scope, ast)
                    .map_err(|e| format!("{e} (in `{src}`)"))?,
            ),
            Template::Map(entries) => {
                let mut out = serde_json::Map::new();
                for (k, t) in entries {
                    out.insert(k.clone(), t.eval(sandbox, scope)?);
                }
                Value::Object(out)
            }
            Template::List(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.eval(sandbox, scope))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// Evaluates a list template, splicing items that evaluate to arrays and dropping nulls.
    pub fn eval_spliced(&self, sandbox: &Sandbox, scope: &mut Scope) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let items: Vec<Value> = match self {
            Template::List(items) => items
                .iter()
                .map(|t| t.eval(sandbox, scope))
                .collect::<Result<_, _>>()?,
            other => vec![other.eval(sandbox, scope)?],
        };
        for item in items {
            match item {
                Value::Array(inner) => out.extend(inner.into_iter().filter(|v| !v.is_null())),
                Value::Null => {}
                v => out.push(v),
            }
        }
        Ok(out)
    }

    /// The literal string, when the template is one (used by static checks).
    pub fn literal_str(&self) -> Option<&str> {
        match self {
            Template::Literal(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The template's entry `key`, when it is a map.
    pub fn get(&self, key: &str) -> Option<&Template> {
        match self {
            Template::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, t)| t),
            _ => None,
        }
    }
}

/// A text template (`machine/templates/*.md`): literal text with `{{ expr }}` holes.
#[derive(Debug, Clone)]
pub struct TextTemplate {
    parts: Vec<TextPart>,
}

#[derive(Debug, Clone)]
enum TextPart {
    Text(String),
    Hole(Box<AST>, String),
}

impl TextTemplate {
    /// Compiles the holes of `text` against the names in scope with `compile`.
    pub fn compile(
        text: &str,
        names: &[String],
        compile: impl Fn(&str, &[String]) -> Result<rhai::AST, String>,
    ) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut line = 1;
        while let Some(start) = rest.find("{{") {
            let literal = &rest[..start];
            line += literal.matches('\n').count();
            parts.push(TextPart::Text(literal.to_string()));
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("line {line}: `{{{{` without `}}}}`"))?;
            let src = after[..end].trim();
            let ast = compile(src, names).map_err(|e| format!("line {line}: {e}"))?;
            parts.push(TextPart::Hole(Box::new(ast), src.to_string()));
            line += after[..end].matches('\n').count();
            rest = &after[end + 2..];
        }
        parts.push(TextPart::Text(rest.to_string()));
        Ok(Self { parts })
    }

    /// Renders the template; strings render bare, other values as compact JSON, unit as empty.
    pub fn render(&self, engine: &rhai::Engine, scope: &mut Scope) -> Result<String, String> {
        // The holes first, then the text at its final size: a hole can hold a whole pool
        // as JSON, and a growing text would be copied (and held twice) as it doubles.
        let mut holes: Vec<Option<rhai::ImmutableString>> = Vec::new();
        for part in &self.parts {
            if let TextPart::Hole(ast, src) = part {
                let len = scope.len();
                let v = engine.eval_ast_with_scope::<rhai::Dynamic>(scope, ast);
                scope.rewind(len);
                let v = v.map_err(|e| format!("{e} (in `{{{{ {src} }}}}`)"))?;
                holes.push(if v.is_unit() {
                    None
                } else if v.is_string() {
                    v.into_immutable_string().ok()
                } else {
                    Some(to_json(&v).to_string().into())
                });
            }
        }
        let text_size = |p: &TextPart| match p {
            TextPart::Text(t) => t.len(),
            TextPart::Hole(..) => 0,
        };
        let size = self.parts.iter().map(text_size).sum::<usize>()
            + holes.iter().flatten().map(|h| h.len()).sum::<usize>();
        let mut out = String::with_capacity(size);
        let mut holes = holes.iter();
        for part in &self.parts {
            match part {
                TextPart::Text(t) => out.push_str(t),
                TextPart::Hole(..) => {
                    if let Some(Some(text)) = holes.next() {
                        out.push_str(text);
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_renders_strings_bare_values_as_json_and_unit_as_nothing_at_its_final_size() {
        let engine = rhai::Engine::new_raw();
        let names = vec!["ctx".to_string()];
        let t = TextTemplate::compile(
            "a {{ ctx.s }} b {{ ctx.n }} c {{ ctx.m }} d {{ () }} e",
            &names,
            |src, _| engine.compile_expression(src).map_err(|e| e.to_string()),
        )
        .expect("compiles");
        let mut ctx = rhai::Map::new();
        ctx.insert("s".into(), "x".repeat(1000).into());
        ctx.insert("n".into(), rhai::Dynamic::from_int(7));
        let mut inner = rhai::Map::new();
        inner.insert("k".into(), true.into());
        ctx.insert("m".into(), inner.into());
        let mut scope = Scope::new();
        scope.push("ctx", ctx);
        let out = t.render(&engine, &mut scope).expect("renders");
        assert_eq!(
            out,
            format!("a {} b 7 c {{\"k\":true}} d  e", "x".repeat(1000))
        );
        assert_eq!(out.capacity(), out.len(), "allocated once, at its size");
    }
}
