#!/usr/bin/env bash
# Speed check of a change: the owner_access example built at BASE_REV ("old") against
# the one built from the working tree ("new"), both measured in ONE setup of run.sh
# (the same generated owners, the same smtp-sink settings, the same template files).
#
#   benches/e2e/compare.sh BASE_REV [N] [--runs R] [--attach-kb K] [--min RATIO]
#
# N defaults to 10000, R to 5, RATIO to 0.95. Each of the R rounds measures both
# binaries, each send beside a smtp-source run into the same kind of sink right after
# it, and takes that send's ratio ours / smtp-source; the order within a round swaps
# every round (old first, then new first) so a drift of the machine's speed does not
# favour one side. The figure that counts is
#
#   new/old = median(new's ratios) / median(old's ratios)
#
# and the script exits 1 when it is below RATIO, and when any count is wrong (every
# eligible owner accepted by the sink exactly once, for every send). Absolute rates on
# a shared machine are noisy; a ratio to smtp-source taken within one round cancels
# most of that noise, and the alternation cancels the rest between the two binaries.
# The CPU time of each send (user + system) is printed too: it moves less than the
# rates when other work shares the machine, but it is not what the check judges.
#
# The old build lives in target/compare/: the source of BASE_REV (from `git archive`)
# in target/compare/src, its build in target/compare/target, so a later comparison
# builds only the crate itself (again only when BASE_REV changed).
set -euo pipefail

usage="usage: compare.sh BASE_REV [N] [--runs R] [--attach-kb K] [--min RATIO]"
BASE_REV=${1:?$usage}
shift
N=10000
if [ $# -gt 0 ] && [[ $1 != --* ]]; then N=$1; shift; fi
RUNS=5
ATTACH_KB=0
MIN=0.95
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --attach-kb) ATTACH_KB=$2; shift 2 ;;
    --min) MIN=$2; shift 2 ;;
    *) echo "unknown option $1; $usage" >&2; exit 1 ;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

BASE=$(git -C "$ROOT" rev-parse --verify "$BASE_REV^{commit}") \
  || { echo "compare.sh: $BASE_REV names no commit" >&2; exit 1; }
# One source folder for whichever revision is the base: Cargo judges the crate's build
# fresh by its files' times, and `git archive` gives them the commit's time, so a tree
# of another revision could pass for built. When the revision changes, the folder is
# replaced and the crate's own build removed (its dependencies' builds are kept).
BASE_SRC=$TARGET/compare/src
if [ "$(cat "$TARGET/compare/src.rev" 2>/dev/null)" != "$BASE" ] || [ ! -f "$BASE_SRC/Cargo.toml" ]; then
  rm -rf "$BASE_SRC" "$TARGET/compare/src.rev"
  mkdir -p "$BASE_SRC"
  git -C "$ROOT" archive "$BASE" | tar -x -C "$BASE_SRC"
  (cd "$BASE_SRC" && CARGO_TARGET_DIR=$TARGET/compare/target cargo clean --quiet --release -p owner-access)
  echo "$BASE" > "$TARGET/compare/src.rev"
fi

echo "building old ($BASE_REV = ${BASE:0:10}) and new (the working tree)..." >&2
(cd "$BASE_SRC" && CARGO_TARGET_DIR=$TARGET/compare/target cargo build --quiet --release --all-features --example owner_access)
(cd "$ROOT" && cargo build --quiet --release --all-features --example owner_access)
# A copy of each, so a build elsewhere during the run cannot swap a binary under us.
BIN_DIR=$TARGET/compare/bin
mkdir -p "$BIN_DIR"
OLD=$BIN_DIR/owner_access-old
NEW=$BIN_DIR/owner_access-new
cp "$TARGET/compare/target/release/examples/owner_access" "$OLD"
cp "$TARGET/release/examples/owner_access" "$NEW"

# shellcheck source=setup.sh
. "$HERE/setup.sh"
e2e_setup
e2e_message_size "$OLD"
OLD_SIZE=$SIZE
e2e_message_size "$NEW"
if [ "$SIZE" != "$OLD_SIZE" ]; then
  # smtp-source sends one size; say so when the two builds write different ones.
  echo "note: old messages are $OLD_SIZE bytes, new ones $SIZE; smtp-source sends $SIZE" >&2
fi

old_ratios=(); new_ratios=(); old_rates=(); new_rates=(); old_cpu=(); new_cpu=(); sources=()
measure() { # measure old|new
  local bin
  if [ "$1" = old ]; then bin=$OLD; else bin=$NEW; fi
  e2e_run_ours "$bin"
  e2e_run_source
  local ratio
  ratio=$(python3 -c "print($OURS_RATE / $SOURCE_RATE)")
  sources+=("$SOURCE_RATE")
  if [ "$1" = old ]; then
    old_ratios+=("$ratio"); old_rates+=("$OURS_RATE"); old_cpu+=("$OURS_CPU")
  else
    new_ratios+=("$ratio"); new_rates+=("$OURS_RATE"); new_cpu+=("$OURS_CPU")
  fi
  printf 'round %s, %s: ours %.0f/s (CPU %.2f s), smtp-source %.0f/s, ratio %.3f\n' \
    "$round" "$1" "$OURS_RATE" "$OURS_CPU" "$SOURCE_RATE" "$ratio" >&2
}

for round in $(seq "$RUNS"); do
  if [ $((round % 2)) -eq 1 ]; then measure old; measure new; else measure new; measure old; fi
done

join() { local IFS=,; echo "$*"; }
python3 - "$BASE_REV" "${BASE:0:10}" "$N" "$EXPECTED" "$SIZE" "$ATTACH_KB" "$RUNS" "$MIN" \
  "$(join "${old_ratios[@]}")" "$(join "${new_ratios[@]}")" \
  "$(join "${old_rates[@]}")" "$(join "${new_rates[@]}")" "$(join "${sources[@]}")" \
  "$(join "${old_cpu[@]}")" "$(join "${new_cpu[@]}")" <<'PY'
import statistics
import sys

rev, sha, n, sent, size, kb, runs, minimum, *lists = sys.argv[1:]
old_r, new_r, old_rates, new_rates, sources, old_cpu, new_cpu = ([float(x) for x in l.split(",")] for l in lists)
minimum = float(minimum)
print(f"owners {n}, eligible {sent}, message {int(size):,} bytes, attachment {kb} KB, "
      f"{runs} rounds, old = {rev} ({sha}), new = the working tree")
fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)
print(f"old, ours / smtp-source per round: {fmt(old_r)} (median {statistics.median(old_r):.3f})")
print(f"new, ours / smtp-source per round: {fmt(new_r)} (median {statistics.median(new_r):.3f})")
print(f"messages/s, medians: old {statistics.median(old_rates):,.0f}, new {statistics.median(new_rates):,.0f}, "
      f"smtp-source {statistics.median(sources):,.0f} (range {min(sources):,.0f} to {max(sources):,.0f})")
print(f"CPU seconds per send, medians: old {statistics.median(old_cpu):.2f}, new {statistics.median(new_cpu):.2f}")
ratio = statistics.median(new_r) / statistics.median(old_r)
verdict = "ok" if ratio >= minimum else "TOO SLOW"
print(f"new/old (median ratios): {ratio:.3f} (at least {minimum}: {verdict})")
sys.exit(0 if ratio >= minimum else 1)
PY
