#!/usr/bin/env bash
# Before/after comparison of two metaopt binaries on the projects scripts/bench.sh prepared.
#
#   scripts/bench-ab.sh WORK BEFORE_BIN AFTER_BIN [--reps N] [--large-reps N] [--no-callgrind]
#
# WORK is a directory scripts/bench.sh filled (its manifest.tsv and projects). Each case
# runs the two binaries alternately (before, after, before, after, ...), each time in a
# fresh copy of the project, so that both see the same machine load; the table gives the
# median wall time of each and their ratio. On a shared machine the absolute figures
# drift by a factor of two within minutes; the interleaved ratio does not. With valgrind
# installed, the example rows also give the instruction count of one run of each binary
# (callgrind): repeatable to within a few instructions whatever the load.
set -euo pipefail
export LC_ALL=C

work=${1:?usage: bench-ab.sh WORK BEFORE_BIN AFTER_BIN [--reps N] [--large-reps N] [--no-callgrind]}
before=$(realpath "${2:?before binary}")
after=$(realpath "${3:?after binary}")
shift 3
reps=11
large_reps=3
callgrind=yes
while (($#)); do
  case $1 in
    --reps) reps=$2; shift 2 ;;
    --large-reps) large_reps=$2; shift 2 ;;
    --no-callgrind) callgrind=no; shift ;;
    *) echo "bench-ab.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || callgrind=no
manifest=$work/manifest.tsv
[[ -f $manifest ]] || { echo "bench-ab.sh: $manifest not found (run scripts/bench.sh --work $work first)" >&2; exit 2; }
run=$work/ab-run
# Both binaries are run from fresh copies made the same way: the page cache of an
# executable starts it faster or slower depending on how its file was written and what
# became of its pages since (the same bytes, copied half an hour apart, differed by
# 0.5 ms a start here).
before_given=$before after_given=$after
cp "$before" "$work/ab-before"
cp "$after" "$work/ab-after"
before=$work/ab-before
after=$work/ab-after

# wall MS of "$@" run in a fresh copy of project $1.
once() {
  local src=$1; shift
  rm -rf "$run"
  if [[ $src = - ]]; then mkdir -p "$run"; else cp -a "$src" "$run"; fi
  # Written back and left to settle, as a host's files are (see bench.sh).
  sync
  sleep 0.05
  local t0 t1
  t0=$EPOCHREALTIME
  (cd "$run" && "$@" >/dev/null 2>&1) || { echo "bench-ab.sh: '$*' failed in $src" >&2; exit 1; }
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }'
}

# instructions of one run of "$@" in a fresh copy of project $1.
instructions() {
  local src=$1; shift
  rm -rf "$run"
  cp -a "$src" "$run"
  (cd "$run" && valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null) \
    | awk '/refs:/ { gsub(",", "", $4); print $4 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# compare LABEL PROJECT N CMD... (CMD without the binary).
compare() {
  local label=$1 src=$2 n=$3; shift 3
  local b=() a=() i ib="" ia=""
  for ((i = 0; i < n; i++)); do
    b+=("$(once "$src" "$before" "$@")")
    a+=("$(once "$src" "$after" "$@")")
  done
  local mb ma
  mb=$(printf '%s\n' "${b[@]}" | median)
  ma=$(printf '%s\n' "${a[@]}" | median)
  if [[ $callgrind = yes && $label = example* && $src != - ]]; then
    ib=$(instructions "$src" "$before" "$@")
    ia=$(instructions "$src" "$after" "$@")
  fi
  awk -v l="$label" -v mb="$mb" -v ma="$ma" -v ib="$ib" -v ia="$ia" 'BEGIN {
    printf "| %s | %.1f | %.1f | %.2f× |", l, mb, ma, (ma > 0) ? mb / ma : 0
    if (ib != "" && ia != "") printf " %.1f M → %.1f M |\n", ib / 1e6, ia / 1e6; else print " — |"
  }'
}

echo "before: $before_given"
echo "after:  $after_given"
echo "$(nproc) CPU(s), load average $(cut -d' ' -f1-3 /proc/loadavg) at start; reps: example $reps, large $large_reps (interleaved)"
echo
echo "| case | before ms | after ms | speed-up | instructions (one run) |"
echo "|---|---|---|---|---|"
while IFS=$'\t' read -r size case agent dir _bytes _floor rule; do
  n=$reps
  [[ $size = large ]] && n=$large_reps
  if [[ $case = step ]]; then
    compare "$size step" "$dir" "$n" step
  else
    compare "$size $case [$rule]" "$dir" "$n" agent "$agent" --mode "$case"
  fi
  # The step that closes an iteration (roll gate, reports): on the roll gate's project.
  if [[ $case = gate_roll_iteration ]]; then
    compare "$size step at the roll gate" "$dir" "$n" step
  fi
  # A phase that writes the state back, and a step whose phases leave the pools unread.
  if [[ $case = plan_launch ]]; then
    compare "$size $case --apply-state" "$dir" "$n" agent "$agent" --mode "$case" --apply-state
    compare "$size step at $case" "$dir" "$n" step
  fi
done <"$manifest"
compare "demo --quiet" - 5 demo --quiet --dir demo
rm -rf "$run"
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
