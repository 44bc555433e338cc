//! The `render(name, ctx)` primitive: text templates of
//! `machine/templates/` rendered from scripts (task files, reports, hook text).
//! A template is compiled the first time it is rendered (a phase renders one
//! or two of them; compiling all of them at start-up was a tenth of a short
//! phase's time).

use crate::engine::library::Library;
use crate::engine::sandbox::{Sandbox, compile_script};
use crate::engine::template::TextTemplate;
use indexmap::IndexMap;
use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext, Position, Scope};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Name of the one variable a text template sees.
const CTX: &str = "ctx";

/// The text templates, by name, compiled on first use.
pub struct TextTemplates {
    sources: IndexMap<String, String>,
    compiled: RefCell<HashMap<String, Rc<TextTemplate>>>,
    library: Rc<Library>,
}

impl std::fmt::Debug for TextTemplates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.sources.keys()).finish()
    }
}

impl TextTemplates {
    /// Templates from `(name, text)` pairs; scripts carry functions of `library`.
    pub fn new(sources: IndexMap<String, String>, library: Rc<Library>) -> Self {
        Self {
            sources,
            compiled: RefCell::new(HashMap::new()),
            library,
        }
    }

    /// The fields of `ctx.<entry>` template `name` reads, or `None` when it uses the
    /// entry whole, or `ctx` any way but `ctx.<entry>` (see
    /// [`crate::engine::sandbox::projected_fields_with`]; a library method called on the
    /// entry reads what its body reads of `this`).
    pub fn fields_read(&self, name: &str, entry: &str) -> Option<Vec<String>> {
        let text = self.sources.get(name)?;
        // `ctx` used but as `ctx.<entry>` (`ctx?.state`, `ctx["state"]`, `f(ctx)`) could
        // reach the entry unseen.
        let plain_dots = crate::engine::sandbox::projected_fields(&[text.as_str()], CTX).is_some()
            && !text.contains(&format!("{CTX}?."));
        if !plain_dots {
            return None;
        }
        crate::engine::sandbox::projected_fields_with(
            &[text.as_str()],
            &format!("{CTX}.{entry}"),
            &|method, arity| self.library.this_fields(method, arity),
        )
    }

    /// True when a template `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    /// Template `name`, compiled now if it was not before; `Ok(None)` when unknown.
    pub fn get(&self, engine: &Engine, name: &str) -> Result<Option<Rc<TextTemplate>>, String> {
        if let Some(t) = self.compiled.borrow().get(name) {
            return Ok(Some(t.clone()));
        }
        let Some(text) = self.sources.get(name) else {
            return Ok(None);
        };
        let names = [CTX.to_string()];
        let t = Rc::new(TextTemplate::compile(text, &names, |src, names| {
            compile_script(engine, &self.library, src, names)
        })?);
        self.compiled
            .borrow_mut()
            .insert(name.to_string(), t.clone());
        Ok(Some(t))
    }

    /// Compiles every template; `(name, error)` for each that does not compile.
    pub fn compile_all(&self, engine: &Engine) -> Vec<(String, String)> {
        self.sources
            .keys()
            .filter_map(|name| self.get(engine, name).err().map(|e| (name.clone(), e)))
            .collect()
    }
}

/// Renders template `name` with `ctx` bound to `data`.
pub fn render_with(
    templates: &TextTemplates,
    engine: &Engine,
    name: &str,
    data: Dynamic,
) -> Result<String, String> {
    let template = templates
        .get(engine, name)
        .map_err(|e| format!("template `{name}`: {e}"))?
        .ok_or_else(|| format!("unknown template `{name}`"))?;
    let mut scope = Scope::new();
    crate::engine::sandbox::push_binding(&mut scope, CTX, data);
    template
        .render(engine, &mut scope)
        .map_err(|e| format!("template `{name}`: {e}"))
}

/// Registers `render(name, ctx)` over the templates.
pub fn register(sandbox: &mut Sandbox, templates: &Rc<TextTemplates>) {
    let templates = templates.clone();
    sandbox.engine.register_fn(
        "render",
        move |ctx: NativeCallContext,
              name: &str,
              data: Dynamic|
              -> Result<String, Box<EvalAltResult>> {
            render_with(&templates, ctx.engine(), name, data)
                .map_err(|m| Box::new(EvalAltResult::ErrorRuntime(m.into(), Position::NONE)))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(text: &str) -> TextTemplates {
        let library = Library::new(&[(
            "lib/r.rhai".into(),
            "fn body() { this.a + this.b }\n".into(),
        )]);
        let mut sources = IndexMap::new();
        sources.insert("t".to_string(), text.to_string());
        TextTemplates::new(sources, Rc::new(library))
    }

    #[test]
    fn a_template_sees_the_fields_it_and_the_methods_it_calls_read() {
        let t = templates("{{ ctx.state?.x }} {{ ctx.state.body() }} {{ ctx.directive.y }}");
        assert_eq!(
            t.fields_read("t", "state"),
            Some(["x", "a", "b"].map(String::from).to_vec())
        );
    }

    #[test]
    fn ctx_reached_any_other_way_shows_the_whole_entry() {
        for text in [
            "{{ ctx?.state.x }}",
            "{{ ctx[\"state\"].x }} {{ ctx.state.x }}",
            "{{ f(ctx) }} {{ ctx.state.x }}",
            "{{ ctx.state.len() }}",
        ] {
            assert_eq!(templates(text).fields_read("t", "state"), None, "{text}");
        }
    }
}
