//! Guard mutation testing: does the suite notice when a guard is wrong?
//! For every rule guard (`when:` in `agents/*.yaml` and `fragments.yaml`)
//! a mutant copy of the machine directory is written with that one guard
//! negated, `!(<guard>)`, by editing the YAML text in place (anchors,
//! comments and every other byte stay as they were). The scenarios that
//! evaluated the guard on the real machine are run against the mutant —
//! a scenario that never evaluated it behaves identically under the mutant,
//! since every run is deterministic and the project setup always uses the
//! real machine — and the first failure kills the mutant. Survivors are
//! guards no scenario pins down.

use super::coverage::{RuleKey, inventory};
use crate::machine::source::TableFiles;
use crate::machine::{Machine, TableSource};
use std::path::{Path, PathBuf};

/// One mutant: a guard negated in one table file.
#[derive(Debug, Clone)]
pub struct Mutant {
    /// Table file, relative to the machine directory.
    pub file: String,
    /// 1-based line of the `when:` key.
    pub line: usize,
    /// The original guard.
    pub guard: String,
    /// The mutated table files.
    pub files: TableFiles,
    /// Rules whose guard changed (a fragment guard changes in every phase using it).
    pub affected: Vec<RuleKey>,
}

/// What became of a mutant.
#[derive(Debug, Clone)]
pub enum Fate {
    /// A scenario failed: `(scenario index, first message)`.
    Killed(usize, String),
    /// No scenario failed; `usize` scenarios evaluated the guard.
    Survived(usize),
    /// The mutated tables do not load.
    Invalid(String),
}

/// The machine directory to mutate: `--machine DIR`, else `./machine`.
pub fn machine_dir(explicit: Option<&Path>) -> Result<PathBuf, String> {
    match explicit {
        Some(d) if d.is_dir() => Ok(d.to_path_buf()),
        Some(d) => Err(format!("{}: machine directory not found", d.display())),
        None if Path::new("machine").is_dir() => Ok(PathBuf::from("machine")),
        None => Err(
            "--mutate needs the machine tables as a directory: pass --machine DIR or run where ./machine exists"
                .into(),
        ),
    }
}

/// `(line index, key column)` of every `when:` key in `text`.
fn when_keys(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let mut rest = &line[indent..];
        let mut col = indent;
        if let Some(r) = rest.strip_prefix("- ") {
            let pad = r.len() - r.trim_start_matches(' ').len();
            col += 2 + pad;
            rest = &r[pad..];
        }
        if rest.starts_with("when:") && (rest.len() == 5 || rest[5..].starts_with([' ', '\t'])) {
            out.push((i, col));
        }
    }
    out
}

/// The guard at `lines[i]` (key at column `col`) and the number of lines its value spans.
fn guard_at(lines: &[&str], i: usize, col: usize) -> Option<(String, usize)> {
    let mut end = i + 1;
    let mut last = i + 1;
    while end < lines.len() {
        let l = lines[end];
        if l.trim().is_empty() {
            end += 1;
            continue;
        }
        let indent = l.len() - l.trim_start_matches(' ').len();
        if indent <= col {
            break;
        }
        end += 1;
        last = end;
    }
    let mut snippet = lines[i].get(col..)?.to_string();
    snippet.push('\n');
    for l in &lines[i + 1..last] {
        snippet.push_str(l.get(col..).unwrap_or(""));
        snippet.push('\n');
    }
    let doc: serde_yaml::Mapping = serde_yaml::from_str(&snippet).ok()?;
    let guard = doc.get("when")?.as_str()?.to_string();
    Some((guard, last - i))
}

/// Every guard mutant of the machine in `source`, checked against `original`.
pub fn mutants(source: &TableSource, original: &Machine) -> Vec<Result<Mutant, (String, String)>> {
    let mut files: Vec<String> = source.files_in("agents/", ".yaml");
    if source.get("fragments.yaml").is_some() {
        files.push("fragments.yaml".into());
    }
    let base = inventory(original);
    let mut out = Vec::new();
    for file in files {
        let text = source.get(&file).unwrap_or_default().to_string();
        let lines: Vec<&str> = text.lines().collect();
        for (i, col) in when_keys(&text) {
            let Some((guard, span)) = guard_at(&lines, i, col) else {
                continue;
            };
            let negated = format!("!({guard})");
            let quoted = serde_json::to_string(&negated).unwrap_or_default();
            let mut new_lines: Vec<String> = lines[..i].iter().map(|s| s.to_string()).collect();
            new_lines.push(format!("{}when: {quoted}", &lines[i][..col]));
            new_lines.extend(lines[i + span..].iter().map(|s| s.to_string()));
            let mut new_text = new_lines.join("\n");
            if text.ends_with('\n') {
                new_text.push('\n');
            }
            let mutated = source.with_file(&file, new_text);
            let all = mutated.files().clone();
            let at = format!("{file}:{}", i + 1);
            let machine = match Machine::from_source(mutated) {
                Ok(m) => m,
                Err(e) => {
                    out.push(Err((at, e.0.join("; "))));
                    continue;
                }
            };
            let mutated = inventory(&machine);
            let affected: Vec<RuleKey> = base
                .iter()
                .zip(&mutated)
                .filter(|((k1, g1), (k2, g2))| k1 == k2 && g1 != g2)
                .map(|((k, _), _)| k.clone())
                .collect();
            if affected.is_empty() {
                // Not a rule guard (e.g. a `when` inside some other mapping).
                continue;
            }
            out.push(Ok(Mutant {
                file: file.clone(),
                line: i + 1,
                guard,
                files: all,
                affected,
            }));
        }
    }
    out
}

/// Writes the mutant's tables into `dir`.
pub fn write_tables(files: &TableFiles, dir: &Path) -> Result<(), String> {
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_plain_quoted_and_folded_guards() {
        let text = "steps:\n  - name: a\n    when: x == 1\n  - name: b\n    when: \"!y\"\n  - name: c\n    when: >-\n      z &&\n      w\n    next: ~\n  - when: q\n";
        let lines: Vec<&str> = text.lines().collect();
        let found: Vec<(String, usize)> = when_keys(text)
            .into_iter()
            .filter_map(|(i, c)| guard_at(&lines, i, c))
            .collect();
        assert_eq!(
            found,
            vec![
                ("x == 1".to_string(), 1),
                ("!y".to_string(), 1),
                ("z && w".to_string(), 3),
                ("q".to_string(), 1)
            ]
        );
    }
}
