//! Documents that come straight from the tables stay in step with them.

mod common;
use common::*;

#[test]
fn generated_reference_tables_match_the_machine() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metaopt"))
        .current_dir(repo())
        .args(["machine", "docs", "--check"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "references/ drifted from machine/; run `metaopt machine docs`:\n{}",
        text(&out)
    );
}

#[test]
fn readme_graph_is_the_generated_one() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metaopt"))
        .args(["machine", "graph", "--format", "mermaid"])
        .output()
        .expect("run");
    let graph = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("<!-- generated:graph:begin -->\n```mermaid\n")
        .expect("graph region")
        + "<!-- generated:graph:begin -->\n```mermaid\n".len();
    let end = readme[start..]
        .find("\n```\n<!-- generated:graph:end -->")
        .expect("graph end")
        + start;
    assert_eq!(
        &readme[start..end],
        graph,
        "README graph is stale; paste `metaopt machine graph --format mermaid`"
    );
}
