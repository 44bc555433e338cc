//! The serde floor: parse the large campaign's state file into a `serde_json::Value` and
//! pretty-print it again. No phase that reads and rewrites the state can be faster, so
//! the large-campaign targets are stated as a multiple of it (`scripts/bench.sh`).
//!
//! Next to it: the same text parsed into script values (what a phase does), and parsed
//! leaving the two pools unread (what a phase declaring them `unread:` does).
//!
//! `cargo bench --bench floor` (add `-- --quick` for a fast estimate).

#[path = "support/large.rs"]
mod large;

use criterion::Criterion;
use std::hint::black_box;
use std::time::Duration;

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    large::generate(dir.path(), 42).expect("generate the large project");
    let text = std::fs::read_to_string(dir.path().join(large::STATE_PATH)).expect("state file");
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("floor");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("large/parse+pretty", |b| {
        b.iter(|| large::floor_once(black_box(&text)))
    });
    group.bench_function("large/parse", |b| {
        b.iter(|| black_box(serde_json::from_str::<serde_json::Value>(black_box(&text)).ok()))
    });
    group.bench_function("large/parse into script values", |b| {
        b.iter(|| black_box(metaopt::engine::doc::parse_json(black_box(&text)).ok()))
    });
    // What a phase that declares both pools `unread:` does instead (scan and check them).
    let machine = metaopt::machine::Machine::load(None).expect("embedded tables load");
    let shared = machine.sandbox.shared.borrow();
    let state_schema = shared.schemas["state"]
        .get(&machine.sandbox.engine)
        .expect("state schema builds");
    let unread: Vec<_> = ["current_proposals", "next_proposals"]
        .into_iter()
        .map(|f| (f, state_schema.schema.table.fields.get(f)))
        .collect();
    let shared_text = std::rc::Rc::new(text.clone());
    group.bench_function("large/parse leaving the pools unread", |b| {
        b.iter(|| {
            black_box(metaopt::engine::unread::parse_json_leaving(&shared_text, &unread).ok())
        })
    });
    group.finish();
    c.final_summary();
}
