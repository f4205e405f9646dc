#!/usr/bin/env bash
# End-to-end throughput: owner-access (the owner_access example over SQLite and SMTP)
# against Postfix's smtp-sink, beside smtp-source's own rate into the same sink and a
# Python mail-merge doing the same job, all measured in one run on this machine.
#
#   benches/e2e/run.sh N [--attach-kb K] [--runs R] [--debug] [--no-python]
#
# --debug uses a debug build (the smoke run in .ci/run, which checks the counts, not
# the speed). --no-python leaves the Python mail-merge out (for the 100,000-owner
# runs, which measure our memory and growth).
#
# Prints a table: messages/s, peak RSS, and the ratios ours / smtp-source and
# ours / Python (median of R runs, default 3), then the ratios of each run and their
# median. Exits non-zero when a count is wrong:
# every eligible owner must be accepted by the sink exactly once.
set -euo pipefail

N=${1:?usage: run.sh N [--attach-kb K] [--runs R]}
shift
ATTACH_KB=0
RUNS=3
PROFILE=release
PYTHON=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --attach-kb) ATTACH_KB=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --debug) PROFILE=debug; shift ;;
    --no-python) PYTHON=no; shift ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=setup.sh
. "$HERE/setup.sh"
e2e_setup

echo "building the example ($PROFILE)..." >&2
if [ "$PROFILE" = release ]; then
  (cd "$ROOT" && cargo build --quiet --release --all-features --example owner_access)
else
  (cd "$ROOT" && cargo build --quiet --all-features --example owner_access)
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/examples/owner_access

VENV=${CARGO_TARGET_DIR:-$ROOT/target}/e2e-venv
if [ "$PYTHON" = yes ] && { [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import jinja2' 2>/dev/null; }; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet jinja2
fi

e2e_message_size "$BIN"

ours=(); source_rates=(); python=(); rss=(); by_source=(); by_python=()
for run in $(seq "$RUNS"); do
  e2e_run_ours "$BIN"
  ours+=("$OURS_RATE")
  rss+=("$OURS_RSS")
  e2e_run_source
  source_rates+=("$SOURCE_RATE")
  by_source+=("$(python3 -c "print(${ours[-1]} / ${source_rates[-1]})")")

  # the Python mail-merge
  if [ "$PYTHON" = no ]; then
    python+=(0)
    echo "run $run: ours ${ours[-1]}/s, smtp-source ${source_rates[-1]}/s" >&2
    continue
  fi
  start_sink
  t0=$(now)
  read -r py_sent _ < <("$VENV/bin/python" "$HERE/mail_merge.py" --owners "$WORK/data/owners.csv" --port "$PORT" "${TEMPLATE_ARGS[@]}" "${PY_ATTACH[@]}")
  t1=$(now)
  got=$(stop_sink)
  if [ "$got" != "$EXPECTED" ] || [ "$py_sent" != "$EXPECTED" ]; then
    echo "python: the sink accepted $got and the script says $py_sent, expected $EXPECTED" >&2; exit 1
  fi
  python+=("$(python3 -c "print($EXPECTED / ($t1 - $t0))")")
  by_python+=("$(python3 -c "print(${ours[-1]} / ${python[-1]})")")
  echo "run $run: ours ${ours[-1]}/s, smtp-source ${source_rates[-1]}/s, python ${python[-1]}/s" >&2
done

O=$(median "${ours[@]}"); S=$(median "${source_rates[@]}"); P=$(median "${python[@]}"); R=$(median "${rss[@]}")
# The ratios of each run too: the machine's speed drifts between runs, and a ratio
# taken within one run cancels most of that drift.
BY_S=$(IFS=,; echo "${by_source[*]}"); BY_P=$(IFS=,; echo "${by_python[*]:-}")
python3 - "$N" "$EXPECTED" "$SIZE" "$ATTACH_KB" "$O" "$S" "$P" "$R" "$RUNS" "$PROFILE" "$BY_S" "$BY_P" <<'PY'
import statistics
import sys
n, sent, size, kb, o, s, p, rss, runs, _profile, by_s, by_p = sys.argv[1:]
o, s, p = float(o), float(s), float(p)
print(f"owners {n}, eligible {sent}, message {int(size):,} bytes, attachment {kb} KB, median of {runs} runs, {sys.argv[10]} build")
print("| sender | messages/s | peak RSS |")
print("|---|---|---|")
print(f"| owner-access (8 connections) | {o:,.0f} | {int(rss) / 1024:,.1f} MB |")
print(f"| smtp-source (8 sessions) | {s:,.0f} | |")
if p > 0:
    print(f"| Python mail-merge (1 connection) | {p:,.0f} | |")
print(f"owner-access took {int(sent) / o:.2f} s (import not counted)")
print(f"ours / smtp-source: {o / s:.2f}" + (f"; ours / Python: {o / p:.1f}x" if p > 0 else ""))
by_s = [float(x) for x in by_s.split(",") if x]
print("per run, ours / smtp-source: " + ", ".join(f"{x:.2f}" for x in by_s)
      + f" (median {statistics.median(by_s):.2f})")
by_p = [float(x) for x in by_p.split(",") if x]
if by_p:
    print("per run, ours / Python: " + ", ".join(f"{x:.1f}x" for x in by_p)
          + f" (median {statistics.median(by_p):.1f}x)")
PY
