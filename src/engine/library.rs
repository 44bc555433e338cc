//! The script library of `machine/lib/*.rhai`, compiled on demand. Parsing the
//! whole library took most of a short phase's time, yet a phase calls a handful
//! of its functions. So the library is split into its functions (a chunk runs
//! from one top-level `fn` to the next), and a script, when it is compiled,
//! carries the functions whose names it mentions, and theirs, transitively.
//! A chunk is compiled once per process. Names are found by scanning for
//! identifiers outside comments, which over-approximates (a word in a string
//! pulls a function in) but does not miss a call written in the script: the
//! scan follows rhai's strings (escapes, backtick strings and their `${...}`
//! holes, raw strings) to know where comments are.

use rhai::{AST, Engine};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

/// One top-level function (with the comments above the next one).
#[derive(Debug)]
struct Chunk {
    /// `machine/lib/<file>.rhai` as shown in messages.
    file: String,
    /// The chunk's text, preceded by blank lines so that positions match the file.
    text: String,
    /// Compiled on first need.
    ast: Option<AST>,
    /// Chunks this one calls, found on first need.
    deps: Option<Vec<usize>>,
}

/// The library, split by function.
#[derive(Debug, Default)]
pub struct Library {
    chunks: RefCell<Vec<Chunk>>,
    /// Function name → its chunks (one per overload).
    by_name: HashMap<String, Vec<usize>>,
    /// Lines that are neither a function nor a comment (reported by `compile_all`).
    stray: Vec<String>,
}

/// The number of parameters of the function a chunk defines.
fn parameters(chunk: &str) -> Option<usize> {
    let after = chunk.split_once("fn ")?.1;
    let list = after.split_once('(')?.1.split_once(')')?.0;
    Some(list.split(',').filter(|p| !p.trim().is_empty()).count())
}

/// Identifiers in `text` (words of letters, digits and `_` not starting with a digit)
/// outside comments. A comment names functions it does not call (the one after a
/// chunk's function describes the next function, and pulled it in: three functions
/// parsed for nothing in the ideation gate). Words in string literals are kept: a
/// function pointer names its function in a string (`Fn("name")`).
fn identifiers(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    // The open `${...}` holes of backtick strings (code again, strings and comments
    // included), each with the depth of the braces opened in it.
    let mut holes: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(b'`') if b[i..].starts_with(b"${") => {
                holes.push(0);
                quote = None;
                i += 2;
                continue;
            }
            None if c == b'{' => {
                if let Some(depth) = holes.last_mut() {
                    *depth += 1;
                }
            }
            None if c == b'}' => match holes.last_mut() {
                Some(0) => {
                    holes.pop();
                    quote = Some(b'`');
                }
                Some(depth) => *depth -= 1,
                None => {}
            },
            Some(q) if c == q => quote = None,
            // An escaped character (backtick strings have no escapes).
            Some(q) if c == b'\\' && q != b'`' => i += 1,
            None if c == b'"' || c == b'`' || c == b'\'' => quote = Some(c),
            // A raw string, `#"..."#` (any number of `#`): no escapes; its words count.
            None if c == b'#' => {
                if let Some(hashes) = raw_string_hashes(&b[i..]) {
                    let body = i + hashes + 1;
                    let mut close = vec![b'"'];
                    close.extend(std::iter::repeat_n(b'#', hashes));
                    let end =
                        memchr::memmem::find(&b[body..], &close).map_or(b.len(), |n| body + n);
                    out.extend(words(&text[body..end]));
                    i = (end + close.len()).min(b.len());
                    continue;
                }
            }
            None if b[i..].starts_with(b"//") => {
                i = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n);
                continue;
            }
            None if b[i..].starts_with(b"/*") => {
                i = block_comment_end(b, i);
                continue;
            }
            _ if word(c) => {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                if !c.is_ascii_digit() {
                    out.push(&text[start..i]);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The words of `text` that are identifiers (letters, digits and `_`, not starting
/// with a digit), comments and strings not told apart.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.chars().next().is_some_and(|c| !c.is_ascii_digit()))
}

/// The number of `#` opening a raw string at the start of `b` (`#"`, `##"`, ...).
fn raw_string_hashes(b: &[u8]) -> Option<usize> {
    let hashes = b.iter().take_while(|&&c| c == b'#').count();
    (hashes > 0 && b.get(hashes) == Some(&b'"')).then_some(hashes)
}

/// Where the block comment opening at `start` ends (after its `*/`; rhai nests them),
/// or the end of `b` when it does not.
fn block_comment_end(b: &[u8], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

impl Library {
    /// Splits `files` (`(display name, text)`) into function chunks.
    pub fn new(files: &[(String, String)]) -> Self {
        let mut chunks = Vec::new();
        let mut by_name = HashMap::new();
        let mut stray = Vec::new();
        for (file, text) in files {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            // Only functions and comments at the top level: anything else would be
            // dropped when a script takes the functions it calls.
            for (i, line) in lines.iter().enumerate() {
                let top = line.trim_end();
                let allowed = top.is_empty()
                    || top.starts_with(char::is_whitespace)
                    || top.starts_with("//")
                    || top.starts_with('}')
                    || top.starts_with("fn ")
                    || top.starts_with("private fn ");
                if !allowed {
                    stray.push(format!(
                        "{file}: line {}: only functions and comments may start at the beginning of a line (found `{top}`)",
                        i + 1
                    ));
                }
            }
            let starts: Vec<usize> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.starts_with("fn ") || l.starts_with("private fn "))
                .map(|(i, _)| i)
                .collect();
            for (k, &start) in starts.iter().enumerate() {
                let end = starts.get(k + 1).copied().unwrap_or(lines.len());
                let body: String = lines[start..end].concat();
                let name = lines[start]
                    .trim_start_matches("private ")
                    .trim_start_matches("fn ")
                    .split('(')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                by_name
                    .entry(name)
                    .or_insert_with(Vec::new)
                    .push(chunks.len());
                chunks.push(Chunk {
                    file: file.clone(),
                    text: "\n".repeat(start) + body.as_str(),
                    ast: None,
                    deps: None,
                });
            }
        }
        Self {
            chunks: RefCell::new(chunks),
            by_name,
            stray,
        }
    }

    /// Every chunk defining a function named `name`.
    fn chunks_named(&self, name: &str) -> &[usize] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// Compiles chunk `i` if needed and returns the chunks it calls.
    fn load(&self, engine: &Engine, i: usize) -> Result<Vec<usize>, String> {
        if let Some(deps) = &self.chunks.borrow()[i].deps {
            return Ok(deps.clone());
        }
        let (text, file) = {
            let c = &self.chunks.borrow()[i];
            (c.text.clone(), c.file.clone())
        };
        let ast = engine.compile(&text).map_err(|e| format!("{file}: {e}"))?;
        let mut deps = BTreeSet::new();
        for word in identifiers(&text) {
            deps.extend(self.chunks_named(word).iter().copied());
        }
        let deps: Vec<usize> = deps.into_iter().collect();
        let mut chunks = self.chunks.borrow_mut();
        chunks[i].ast = Some(ast);
        chunks[i].deps = Some(deps.clone());
        Ok(deps)
    }

    /// The library functions `script` needs, transitively, as one AST (`None`: none).
    pub fn needed_by(&self, engine: &Engine, script: &str) -> Result<Option<AST>, String> {
        let mut todo: Vec<usize> = Vec::new();
        for word in identifiers(script) {
            todo.extend(self.chunks_named(word).iter().copied());
        }
        let mut seen = BTreeSet::new();
        while let Some(i) = todo.pop() {
            if seen.insert(i) {
                todo.extend(self.load(engine, i)?);
            }
        }
        if seen.is_empty() {
            return Ok(None);
        }
        let chunks = self.chunks.borrow();
        let mut out = AST::empty();
        for i in seen {
            if let Some(ast) = &chunks[i].ast {
                out += ast.clone_functions_only();
            }
        }
        Ok(Some(out))
    }

    /// The fields of `this` a function named `name` reads, with the functions it calls
    /// on `this` (see [`crate::engine::sandbox::projected_fields_with`]); `None` when it
    /// may use `this` whole, or no function has that name.
    pub fn this_fields(&self, name: &str, arity: usize) -> Option<Vec<String>> {
        self.this_fields_in(name, arity, &RefCell::new(Vec::new()))
    }

    fn this_fields_in(
        &self,
        name: &str,
        arity: usize,
        seen: &RefCell<Vec<(String, usize)>>,
    ) -> Option<Vec<String>> {
        // Only a function of that many parameters is what the call runs (rhai's own
        // method of that name otherwise).
        let texts: Vec<String> = {
            let chunks = self.chunks.borrow();
            self.chunks_named(name)
                .iter()
                .map(|&i| chunks[i].text.clone())
                .filter(|text| parameters(text) == Some(arity))
                .collect()
        };
        if texts.is_empty() {
            return None;
        }
        if seen.borrow().iter().any(|(n, a)| n == name && *a == arity) {
            return Some(Vec::new()); // its fields are counted where it was first met
        }
        seen.borrow_mut().push((name.to_string(), arity));
        let sources: Vec<&str> = texts.iter().map(String::as_str).collect();
        crate::engine::sandbox::projected_fields_with(&sources, "this", &|m, a| {
            self.this_fields_in(m, a, seen)
        })
    }

    /// Compiles every chunk; one message per chunk that does not compile and per line
    /// outside a function.
    pub fn compile_all(&self, engine: &Engine) -> Vec<String> {
        let n = self.chunks.borrow().len();
        let mut errors = self.stray.clone();
        errors.extend((0..n).filter_map(|i| self.load(engine, i).err()));
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib() -> Library {
        Library::new(&[(
            "lib/a.rhai".into(),
            "// header\n\nfn a(x) { b(x) + 1 }\n\n// b doubles\nfn b(x) { x * 2 }\nfn b(x, y) { x * y }\nfn c() { 0 }\n".into(),
        )])
    }

    #[test]
    fn a_method_reads_the_fields_of_this_its_body_and_its_methods_read() {
        let l = Library::new(&[(
            "lib/m.rhai".into(),
            "fn body() { this.a + this?.b.c + this.more() + this.body() }\n\
             fn more() { f(this.d) }\n\
             fn whole() { f(this) }\n\
             fn calls_whole() { this.whole() }\n"
                .into(),
        )]);
        assert_eq!(
            l.this_fields("body", 0),
            Some(["a", "b", "d"].map(String::from).to_vec())
        );
        assert_eq!(l.this_fields("whole", 0), None);
        assert_eq!(l.this_fields("calls_whole", 0), None);
        assert_eq!(l.this_fields("unknown", 0), None);
        // Another number of arguments calls another function (rhai's own, perhaps).
        assert_eq!(l.this_fields("body", 1), None);
    }

    #[test]
    fn a_script_carries_the_functions_it_calls_transitively() {
        let engine = Engine::new_raw();
        let l = lib();
        let ast = l.needed_by(&engine, "a(3)").unwrap().unwrap();
        let names: BTreeSet<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
        assert_eq!(names, ["a", "b"].iter().map(|s| s.to_string()).collect());
        assert_eq!(ast.iter_functions().count(), 3, "both overloads of b");
        assert!(l.needed_by(&engine, "1 + 2").unwrap().is_none());
    }

    #[test]
    fn identifiers_skip_comments_and_keep_strings() {
        let text = "fn f(x) { g(x) + h2 } // calls k\n\
                    /* m /* nested n */ still o */ p(\"https://q // r\", 'c', `s ${t(1)}`)\n\
                    3e5 + 0x1f + _u; \"esc \\\" v\" w";
        assert_eq!(
            identifiers(text),
            [
                "fn", "f", "x", "g", "x", "h2", "p", "https", "q", "r", "c", "s", "t", "_u", "esc",
                "v", "w"
            ]
        );
        // A raw string has no escapes: its closing quote ends it, then code resumes.
        assert_eq!(identifiers("x + #\"a\\\"# + f // g"), ["x", "a", "f"]);
        assert_eq!(
            identifiers("x + ##\"a\"# b // c\"## + y // z"),
            ["x", "a", "b", "c", "y"]
        );
        // A hole of a backtick string is code: its strings and comments too.
        assert_eq!(
            identifiers("`a ${ `b // x` } ${ f({}) /* g */ } c` + h"),
            ["a", "b", "x", "f", "c", "h"]
        );
        // An unclosed comment or string runs to the end.
        assert_eq!(identifiers("a /* b"), ["a"]);
        assert_eq!(identifiers("a \"b c"), ["a", "b", "c"]);
    }

    #[test]
    fn a_function_named_only_in_a_comment_is_not_carried() {
        let engine = Engine::new_raw();
        let l = Library::new(&[(
            "lib/c.rhai".into(),
            "fn a() { 1 }\n\n// b, below, is not called by a\nfn b() { c() }\nfn c() { 2 }\n"
                .into(),
        )]);
        let ast = l.needed_by(&engine, "a() // and not b()").unwrap().unwrap();
        let names: Vec<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
        assert_eq!(names, ["a"]);
    }

    /// What `compile_all` reports for one library file.
    fn errors_of(file: &str, text: &str) -> Vec<String> {
        Library::new(&[(file.into(), text.into())]).compile_all(&Engine::new_raw())
    }

    #[test]
    fn chunk_errors_name_the_file_and_the_line_of_the_file() {
        let errors = errors_of("lib/bad.rhai", "fn ok() { 1 }\n\nfn bad( { }\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("lib/bad.rhai: "), "{}", errors[0]);
        assert!(errors[0].contains("line 3"), "{}", errors[0]);
    }

    #[test]
    fn top_level_statements_are_reported() {
        let errors = errors_of(
            "lib/s.rhai",
            "// ok\nconst LIMIT = 3;\nfn f() {\n    LIMIT\n}\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("lib/s.rhai: line 2"), "{}", errors[0]);
    }
}
