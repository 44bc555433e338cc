#!/usr/bin/env bash
# Whole-process performance table of metaopt against its targets.
#
#   scripts/bench.sh [--reps N] [--large-reps N] [--sizes "example large"] [--work DIR] [--dynamic]
#
# Builds the release binary (honours CARGO_TARGET_DIR) as it is installed: on x86-64
# Linux the static build (`cargo build-static`, .cargo/config.toml), elsewhere, or with
# --dynamic, the plain `cargo build --release`. Then it writes deterministic projects
# with the `phases` bench's prepare mode (benches/support/large.rs: the bundled example
# campaign at two sizes, one project per control-agent phase, each checked to take its
# main branch), then times, as a host would run them:
#   - every phase: `metaopt agent <agent> --mode <phase>` (no --apply-state; the project
#     is copied fresh before each repetition, so every run sees the same input);
#   - `metaopt step` on the generated project (one gate merging every ideation result),
#     on the roll gate's project (the step that closes an iteration, with its reports),
#     and on the launch project (a step whose phases leave the pools unread);
#   - `metaopt demo --quiet`;
# and prints a markdown table (also saved as DIR/table.md) with the median wall time,
# the peak RSS of the large runs, the serde floor (parse + pretty-print the state with
# serde_json, in-process) and a PASS/FAIL per target:
#   example: any control-agent phase < 3 ms; demo < 1 s (the issue sets no example
#            target for `metaopt step`, which runs up to three phases: "no target");
#   large:   any phase or step < 150 ms, peak RSS < 4 x state size + 30 MiB,
#            median <= 3 x the serde floor.
#
# The example rows (milliseconds) are timed by `spawn-timer` (benches/support/
# spawn_timer.rs, built here): from spawning the process to its exit, the project
# copied before the clock starts. Every copy, at both sizes, is written back (`sync`)
# and left to settle for 50 ms before its run, as a host's files are (written and
# synced by an earlier step; a file changed in the last 20 ms is compared by its
# contents when read again: src/workspace/fsio.rs). Timed from this shell they would
# carry a subshell, `cd` and a fork (about 2 ms here). The last row times `true` the
# same way: what the spawn itself costs. The large rows are timed with bash's EPOCHREALTIME around
# /usr/bin/time -f "%M", which supplies the peak RSS (its ~1 ms of overhead is noise at
# that scale; without GNU time the RSS is sampled from /proc/<pid>/status VmHWM).
# The machine's load average is printed with the table: on a busy machine every number
# is inflated.
set -euo pipefail
export LC_ALL=C

reps=${BENCH_REPS:-11}
large_reps=${BENCH_LARGE_REPS:-3}
sizes=${BENCH_SIZES:-"example large"}
work=${BENCH_WORK:-}
build=static
while (($#)); do
  case $1 in
    --reps) reps=$2; shift 2 ;;
    --large-reps) large_reps=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --dynamic) build=dynamic; shift ;;
    -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-target}
[[ $target = /* ]] || target=$root/$target
host=$(rustc -vV | sed -n 's/^host: //p')
[[ $host = x86_64-unknown-linux-gnu ]] || build=dynamic
work=${work:-$(mktemp -d -t metaopt-bench-XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
run=$work/run

# What is measured: the commit, +dirty when the sources differ from it (others may commit
# while this runs; the binary is built once, here).
commit=$(git -C "$root" rev-parse --short HEAD)
[[ -z $(git -C "$root" status --porcelain -- src machine build.rs Cargo.toml Cargo.lock .cargo) ]] || commit+="+dirty"
echo "building the release binary and preparing projects in $work ..." >&2
if [[ $build = static ]]; then
  cargo build-static --quiet
  bin=$target/$host/release/metaopt
else
  cargo build --release --quiet
  bin=$target/release/metaopt
fi
cargo build --release --quiet --example spawn-timer
# Measure a copy: the prepare step's `cargo bench` rebuilds the release binary when
# the sources changed in the meantime (other people commit to the tree).
cp "$bin" "$work/metaopt"
bin=$work/metaopt
cp "$target/release/examples/spawn-timer" "$work/spawn-timer"
timer=$work/spawn-timer
METAOPT_BENCH_PREPARE=$work cargo bench --quiet --bench phases >&2
manifest=$work/manifest.tsv

gnu_time=""
if [[ -x /usr/bin/time ]] && /usr/bin/time -f "%M" -o /dev/null true 2>/dev/null; then
  gnu_time=/usr/bin/time
fi

# Runs "$@" in $run; sets `ms` (wall) and `kib` (peak RSS).
timed() {
  local t0 t1 rc=0
  kib=""
  if [[ -n $gnu_time ]]; then
    t0=$EPOCHREALTIME
    (cd "$run" && "$gnu_time" -f "%M" -o "$work/rss" "$@" >/dev/null 2>"$work/stderr") || rc=$?
    t1=$EPOCHREALTIME
    kib=$(tail -n 1 "$work/rss")
  else
    local pid v
    t0=$EPOCHREALTIME
    (cd "$run" && exec "$@" >/dev/null 2>"$work/stderr") &
    pid=$!
    kib=0
    while kill -0 "$pid" 2>/dev/null; do
      v=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
      [[ -n $v ]] && kib=$v
      sleep 0.005
    done
    wait "$pid" || rc=$?
    t1=$EPOCHREALTIME
  fi
  if ((rc != 0)); then
    echo "bench.sh: '$*' failed ($rc) in a copy of the project:" >&2
    cat "$work/stderr" >&2
    exit 1
  fi
  ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) * 1000 }')
}

# measure SRC N RSS CMD...: median ms and max peak RSS (KiB) of N runs, each in a fresh copy.
measure() {
  local src=$1 n=$2 want_rss=$3; shift 3
  local times=() peak=0 i out
  if [[ $want_rss = none ]]; then
    out=$("$timer" "$n" "${src:--}" "$run" -- "$@") || {
      echo "bench.sh: spawn-timer failed on '$*'" >&2
      exit 1
    }
    read -r -d '' -a times <<<"$out" || true
    rm -rf "$run"
    median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    peak_kib=0
    return
  fi
  for ((i = 0; i < n; i++)); do
    rm -rf "$run"
    if [[ -n $src ]]; then cp -a "$src" "$run"; else mkdir -p "$run"; fi
    # The copy is written back (`sync`) and left to settle (50 ms), as the files a host
    # runs a step on were written and synced by an earlier step, not a moment ago: the
    # harness's own 12 MB of dirty pages would be written back during the run and slow
    # its fsyncs, and a file changed in the last 20 ms gets no stamp
    # (src/workspace/fsio.rs), its re-reads comparing its contents.
    sync
    sleep 0.05
    timed "$@"
    times+=("$ms")
    if [[ -n $kib ]] && ((kib > peak)); then peak=$kib; fi
  done
  rm -rf "$run"
  median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  peak_kib=$peak
}

has_size() { [[ " $sizes " = *" $1 "* ]]; }

# One table row. Args: label, example ms, large ms, rss KiB, state bytes, floor ms,
# example limit ms ("none": the row has no example target).
row() {
  awk -v label="$1" -v ex="$2" -v lg="$3" -v kib="$4" -v bytes="$5" -v floor="$6" -v exlim="$7" '
    function verdict(ok) { return ok ? "PASS" : "**FAIL**" }
    BEGIN {
      state = (bytes == "") ? "" : bytes / 1048576
      rss = (kib == "") ? "" : kib / 1024
      ratio = (lg == "" || floor == "" || floor == 0) ? "" : lg / floor
      v_ex = (ex == "") ? "—" : (exlim == "none") ? "no target" : verdict(ex < exlim)
      v_lg = (lg == "") ? "—" : verdict(lg < 150)
      v_rss = (rss == "" || state == "") ? "—" : verdict(rss < 4 * state + 30)
      v_fl = (ratio == "") ? "—" : verdict(ratio <= 3)
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label,
        (ex == "") ? "—" : sprintf("%.2f", ex), (lg == "") ? "—" : sprintf("%.1f", lg),
        (rss == "") ? "—" : sprintf("%.1f", rss), (state == "") ? "—" : sprintf("%.2f", state),
        (floor == "") ? "—" : sprintf("%.1f", floor), (ratio == "") ? "—" : sprintf("%.1f", ratio),
        v_ex, v_lg, v_rss, v_fl
    }'
}

field() { # field SIZE CASE COLUMN
  awk -F'\t' -v s="$1" -v c="$2" -v k="$3" '$1 == s && $2 == c { print $k }' "$manifest"
}

table=$work/table.md
{
  echo "metaopt $commit ($build build), $(nproc) CPU(s), load average $(cut -d' ' -f1-3 /proc/loadavg) at start; reps: example $reps, large $large_reps"
  echo
  echo "| phase | example median ms | large median ms | large peak RSS MiB | state size MiB | floor ms | ratio to floor | example < 3 ms | large < 150 ms | RSS < 4×state+30 MiB | ≤ 3× floor |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
} >"$table"

cases=$(awk -F'\t' '$1 == "example" { print $2 }' "$manifest")
for case in $cases; do
  ex="" lg="" kib="" bytes="" floor="" label=""
  for size in example large; do
    has_size "$size" || continue
    dir=$(field "$size" "$case" 4)
    if [[ $case = step ]]; then
      cmd=("$bin" step)
      label="step (WAIT_FOR_PROPOSALS gate)"
    else
      cmd=("$bin" agent "$(field "$size" "$case" 3)" --mode "$case")
      rule=$(field "$size" "$case" 7)
      if [[ -z $label ]]; then
        label="$case [$rule]"
      elif [[ $label != *"[$rule]"* ]]; then
        label="$label / large [$rule]"
      fi
    fi
    echo "  $size $case ..." >&2
    if [[ $size = example ]]; then
      measure "$dir" "$reps" none "${cmd[@]}"
      ex=$median
    else
      measure "$dir" "$large_reps" rss "${cmd[@]}"
      lg=$median kib=$peak_kib
      bytes=$(field large "$case" 5) floor=$(field large "$case" 6)
    fi
  done
  exlim=3
  [[ $case != step ]] || exlim=none
  row "$label" "$ex" "$lg" "$kib" "$bytes" "$floor" "$exlim" >>"$table"
done
# `metaopt step` on the projects of another phase: step_row CASE LABEL.
step_row() {
  local case=$1 label=$2 ex="" lg="" kib="" bytes="" floor="" size dir
  for size in example large; do
    has_size "$size" || continue
    dir=$(field "$size" "$case" 4)
    [[ -n $dir ]] || continue
    echo "  $size step at $case ..." >&2
    if [[ $size = example ]]; then
      measure "$dir" "$reps" none "$bin" step
      ex=$median
    else
      measure "$dir" "$large_reps" rss "$bin" step
      lg=$median kib=$peak_kib
      bytes=$(field large "$case" 5) floor=$(field large "$case" 6)
    fi
  done
  [[ -z $ex$lg ]] || row "$label" "$ex" "$lg" "$kib" "$bytes" "$floor" none >>"$table"
}
# The step that closes an iteration (orchestrator gate, roll gate, iteration and final
# reports), and a step whose phases never read the pools (they stay unread: the state
# is written back from its text).
step_row gate_roll_iteration "step (ROLL_ITERATION: roll gate and reports)"
step_row plan_launch "step (LAUNCH_SWEEP: the pools left unread)"
if has_size example; then
  echo "  demo ..." >&2
  measure "" "$reps" none "$bin" demo --quiet --dir demo
  row "demo --quiet (target < 1 s)" "$median" "" "" "" "" 1000 >>"$table"
fi
# What the measuring itself adds to each example figure: spawning a program that does
# nothing, and waiting for it.
true_bin=$(type -P true)
measure "" "$reps" none "$true_bin"
row "spawn floor: \`$true_bin\` timed the same way (in every example figure above)" "$median" "" "" "" "" 3 >>"$table"
{
  echo
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). Phase labels carry the rule that decided."
  echo "floor = serde_json::from_str::<Value> + to_string_pretty of that project's state file, in-process (median of 9,"
  echo "measured while the projects are prepared; \`cargo bench --bench floor\` gives a steadier figure)."
} >>"$table"
cat "$table"
