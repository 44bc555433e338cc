//! The `render(name, ctx)` primitive: text templates of
//! `machine/templates/` rendered from scripts (task files, reports, hook text).

use crate::engine::sandbox::Sandbox;
use crate::engine::template::TextTemplate;
use indexmap::IndexMap;
use rhai::{Dynamic, EvalAltResult, NativeCallContext, Position, Scope};
use std::rc::Rc;

/// Registers `render(name, ctx)` over the compiled templates.
pub fn register(sandbox: &mut Sandbox, templates: &IndexMap<String, TextTemplate>) {
    let templates = Rc::new(templates.clone());
    for engine in [&mut sandbox.engine, &mut sandbox.guard_engine] {
        let templates = templates.clone();
        engine.register_fn(
            "render",
            move |ctx: NativeCallContext,
                  name: &str,
                  data: Dynamic|
                  -> Result<String, Box<EvalAltResult>> {
                let fail =
                    |m: String| Box::new(EvalAltResult::ErrorRuntime(m.into(), Position::NONE));
                let template = templates
                    .get(name)
                    .ok_or_else(|| fail(format!("unknown template `{name}`")))?;
                let mut scope = Scope::new();
                scope.push_dynamic("ctx", data);
                template
                    .render(ctx.engine(), &mut scope)
                    .map_err(|e| fail(format!("template `{name}`: {e}")))
            },
        );
    }
}
