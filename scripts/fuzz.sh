#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 600), one after another, and
# prints per target the wall time it ran, its executions, libFuzzer's average executions
# per second and its findings (the artifacts it wrote; a target that ended non-zero without
# one counts as one finding).
#
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]        (-h, --help: the usage)
#
# SECONDS is a whole number of seconds > 0: libFuzzer reads -max_total_time=0 as "no limit",
# so 0 is refused rather than run forever. FUZZ_RUNS=N (a whole number > 0) also stops a
# target after N executions (a campaign's goal, e.g. 10000000); FUZZ_BUILD=0 skips the build
# (a campaign on binaries built before, outside any lock).
#
# Exit status: 0 every target ran clean; 1 a finding; 2 a usage error, an unknown target,
# or a target not built (FUZZ_BUILD=0 before any build, or the build failed). Names and
# numbers are checked before the build and before any directory is made.
#
# Each run starts from the committed corpus (fuzz/corpus/TARGET: small, minimised inputs;
# replaying them is the first thing a run does) and writes what it discovers to a working
# corpus (fuzz/corpus-work/TARGET in the repository, or $FUZZ_WORK_DIR/TARGET, a relative
# FUZZ_WORK_DIR taken from the directory the script is run from; not committed). A crash or
# a disagreement is written to fuzz/artifacts/TARGET/. scripts/test.sh runs it with a short
# time (the smoke); long campaigns run it with hours, under `nice -n 19` on shared cores.
#
# Running a finding again, from the repository's root: the target's binary with the
# artifact as its argument runs that one input and prints the panic,
#   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/crash-...
# and libFuzzer shrinks it (-runs=N tries a round; the smallest failing input goes to FILE):
#   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET -minimize_crash=1 -runs=10000 \
#     -exact_artifact_path=FILE fuzz/artifacts/TARGET/crash-...
# SIGHTLINE_FUZZ_SHOW=1 makes the differential target print each query and the tiers that
# answered it. Run by hand, the differential target leaves its engine (~42 MB) under
# $TMPDIR every time it starts: give it TMPDIR=$(mktemp -d) and remove that afterwards.
#
# Needs cargo-fuzz (scripts/install-deps.sh --tests installs the pinned one); without a
# sanitizer it builds on the stable toolchain. The build goes to fuzz/target (~2.4 GB),
# apart from the workspace's.
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 [SECONDS] [TARGET...]
  SECONDS  how long each target runs: a whole number of seconds > 0 (default 600)
  TARGET   a fuzz target of fuzz/Cargo.toml (default: every one)
  FUZZ_RUNS=N (a whole number > 0) also stops each target after N executions;
  FUZZ_BUILD=0 runs the binaries built before; FUZZ_WORK_DIR=DIR holds the working corpora.
EOF
}
# The usage on stderr after what was wrong, exit 2.
usage_error() {
  echo "$0: $1" >&2
  usage >&2
  exit 2
}
# A whole number > 0 of at most 9 digits: libFuzzer keeps its flags in a C int, so a longer
# one would wrap, and a value it cannot parse (FUZZ_RUNS=abc) it reads as 0.
whole_positive() {
  [[ "$1" =~ ^[0-9]{1,9}$ ]] && ((10#$1 > 0))
}

for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
  esac
done
seconds="${1:-600}"
shift || true
whole_positive "$seconds" || usage_error "SECONDS must be a whole number of seconds > 0 (at most 9 digits), not '$seconds'"
seconds=$((10#$seconds))
runs="${FUZZ_RUNS:-}"
if [ -n "$runs" ]; then
  whole_positive "$runs" || usage_error "FUZZ_RUNS must be a whole number > 0 (at most 9 digits), not '$runs'"
  runs=$((10#$runs))
fi
# A relative FUZZ_WORK_DIR is the caller's (resolved before the cd to the repository);
# the default is fuzz/corpus-work in the repository.
work="${FUZZ_WORK_DIR:-}"
if [ -n "$work" ] && [[ "$work" != /* ]]; then
  work="$PWD/$work"
fi

cd "$(dirname "$0")/.."
work="${work:-fuzz/corpus-work}"

# The targets, checked before the build (minutes) and before any directory is made for
# them: `cargo fuzz list` reads fuzz/Cargo.toml's [[bin]]s and builds nothing.
all_text=$(cd fuzz && cargo fuzz list) || {
  echo "$0: 'cargo fuzz list' failed in fuzz/ (cargo-fuzz: scripts/install-deps.sh --tests installs it)" >&2
  exit 2
}
mapfile -t all <<<"$all_text"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
is_target() {
  local name
  for name in "${all[@]}"; do [ "$name" = "$1" ] && return 0; done
  return 1
}
unknown=0
for t in "${targets[@]}"; do
  if ! is_target "$t"; then
    listed=$(printf '%s, ' "${all[@]}")
    echo "$0: unknown fuzz target $t; the targets are: ${listed%, }" >&2
    unknown=1
  fi
done
[ "$unknown" -eq 0 ] || exit 2

# Release with debug assertions and overflow checks (-a), no sanitizer: the code under test
# is safe Rust, and ASan would only slow every execution (and interpose on libchdb's
# allocator in the differential target).
if [ "${FUZZ_BUILD:-1}" != 0 ]; then
  if ! (cd fuzz && env -u CARGO_TARGET_DIR cargo fuzz build -O -a -s none --codegen-units 16 --target-dir target); then
    echo "$0: the fuzz targets did not build (cargo's message above)" >&2
    exit 2
  fi
fi

bin=fuzz/target/x86_64-unknown-linux-gnu/release
for t in "${targets[@]}"; do
  if [ ! -x "$bin/$t" ]; then
    if [ "${FUZZ_BUILD:-1}" = 0 ]; then
      echo "$0: fuzz target $t is not built ($bin/$t is missing); run without FUZZ_BUILD=0 to build it" >&2
    else
      echo "$0: the build did not make $bin/$t" >&2
    fi
    exit 2
  fi
done
# The dictionary each target's inputs are written in (libFuzzer -dict), where one helps.
dict_of() {
  case "$1" in
    collector_body | pixel_query | normalise) echo fuzz/dicts/collector.dict ;;
    ga4_body) echo fuzz/dicts/ga4.dict ;;
    query_json | query_get) echo fuzz/dicts/query.dict ;;
    *) echo "" ;;
  esac
}

# Each target runs with a directory of its own (mktemp -d): its log, and its TMPDIR. The
# directory is removed after the target whatever its outcome, and by the traps on Ctrl-C,
# a kill or a failure of the script: the differential target leaves its engine (~42 MB)
# under TMPDIR on every run and cannot remove it itself (its harness lives in a static and
# the process ends in `_exit`, before any destructor; fuzz/src/differential.rs says why).
run=""
child=""
cleanup() {
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  if [ -n "$run" ]; then rm -rf "$run"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

failed=0
report=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "fuzz/corpus/$t" "fuzz/artifacts/$t"
  run=$(mktemp -d)
  mkdir "$run/tmp"
  log="$run/log"
  touch "$run/started"
  args=("$work/$t" "fuzz/corpus/$t" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1)
  [ -n "$runs" ] && args+=(-runs="$runs")
  dict=$(dict_of "$t")
  [ -n "$dict" ] && args+=(-dict="$dict")
  echo "== fuzz $t for ${seconds}s${runs:+ or $runs executions}"
  started_ns=$(date +%s%N)
  # In the background, waited for: a signal to the script reaches its trap at once (not
  # after the target's time is up), and the trap stops the target.
  TMPDIR="$run/tmp" "$bin/$t" "${args[@]}" >"$log" 2>&1 &
  child=$!
  status=0
  wait "$child" || status=$?
  child=""
  # The wall time the target ran: FUZZ_RUNS or a finding end it before SECONDS.
  ms=$((($(date +%s%N) - started_ns) / 1000000))
  wall="$((ms / 1000)).$((ms % 1000 / 100))"
  executions=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log" | tail -1)
  # The artifacts this run wrote. A file is named by a hash of its input, so a crash found
  # again overwrites the file of its first finding and a count of files before and after
  # misses it: libFuzzer names every file it writes ("Test unit written to PATH"), and
  # `find -newer` a marker made before the run catches any it did not name. Slow units
  # (inputs over 10 s, libFuzzer's -report_slow_units) are reported, not failures: on a
  # starved machine they are the machine's time, and libFuzzer goes on after them.
  crashes=()
  slow=0
  while IFS= read -r artifact; do
    case "$(basename "$artifact")" in
      slow-unit-*) slow=$((slow + 1)) ;;
      *) crashes+=("$artifact") ;;
    esac
  done < <({ sed -n 's/.*Test unit written to //p' "$log"
             find "fuzz/artifacts/$t" -type f -newer "$run/started"; } | sort -u)
  findings=${#crashes[@]}
  # A target that ended non-zero without an artifact (killed, out of memory before
  # libFuzzer could write one, a crash of the harness itself) is a finding all the same.
  [ "$status" -ne 0 ] && [ "$findings" -eq 0 ] && findings=1
  if [ "$findings" -gt 0 ]; then
    failed=1
    # What the target said about its finding: the panic and the input's file.
    said="panicked at|assertion|disagrees|Test unit written|ERROR:"
    if grep -qE "$said" "$log"; then
      grep -E "$said" -A2 "$log" | head -40 >&2 || true
    else
      tail -40 "$log" >&2
    fi
    [ ${#crashes[@]} -eq 0 ] && echo "$t ended with exit status $status and wrote no artifact" >&2
    # Absolute paths: the caller may be anywhere (the script cd'd to the repository).
    for artifact in "${crashes[@]}"; do
      echo "to run this input again: $PWD/$bin/$t $PWD/$artifact" >&2
    done
  fi
  slow_note=""
  [ "$slow" -gt 0 ] && slow_note=", $slow slow units"
  report+=("$(printf '%-16s %8ss %14s exec %8s exec/s %4s findings (exit %s%s)' \
    "$t" "$wall" "${executions:-?}" "${rate:-?}" "$findings" "$status" "$slow_note")")
  rm -rf "$run"
  run=""
done
echo "== fuzz summary (wall time each target ran; libFuzzer's executions and its average rate)"
printf '%s\n' "${report[@]}"
exit "$failed"
