#!/usr/bin/env bash
# Run the book's chapters headlessly, in book order, with papermill; `make reproduce`.
#
#   scripts/reproduce.sh                          # every chapter, -p profile paper -p device cuda, into runs/paper/
#   scripts/reproduce.sh --profile smoke --device cpu --out runs/smoke 02_elbo_mi
#   scripts/reproduce.sh --dry-run                # print the papermill commands only
#
# Each chapter NN_name writes runs/paper/NN_name.ipynb (the executed notebook, saved after every cell),
# NN_name.log (its cell output) and, once it succeeded, NN_name.done (JSON: profile, device, seconds). A
# chapter with a .done file is skipped when the script is started again (a long GPU session can be
# resumed); --force runs it anyway. The first failing chapter stops the script with a message naming the
# chapter, papermill's exit status (1: a cell raised; 138: the kernel died) and where its notebook is.
# The at-scale chapter (11_at_scale: this machinery itself) is not part of the run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE=paper
DEVICE=cuda
OUT=runs/paper
DRY_RUN=0
FORCE=0
CHAPTERS=()

usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="${2:?--profile needs a value}"; shift 2 ;;
    --device) DEVICE="${2:?--device needs a value}"; shift 2 ;;
    --out) OUT="${2:?--out needs a value}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "reproduce: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) CHAPTERS+=("${1%.ipynb}"); shift ;;
  esac
done

case "$PROFILE" in
  smoke|book|paper) ;;
  *) echo "reproduce: unknown profile '$PROFILE': expected smoke, book or paper" >&2; exit 2 ;;
esac

# papermill from the project's virtual environment when there is one, else from PATH
if [ -x "$ROOT/.venv/bin/papermill" ]; then
  PAPERMILL="$ROOT/.venv/bin/papermill"
  export PATH="$ROOT/.venv/bin:$PATH" # the kernel must start from the same environment
else
  PAPERMILL="$(command -v papermill || true)"
fi
if [ -z "$PAPERMILL" ]; then
  echo "reproduce: papermill not found; run 'make venv' first" >&2
  exit 2
fi

if [ ${#CHAPTERS[@]} -eq 0 ]; then
  # book order is file-name order (NN_name); 11_at_scale documents this script and is left out
  for nb in "$ROOT"/book/[0-9][0-9]_*.ipynb; do
    name="$(basename "$nb" .ipynb)"
    [ "$name" = 11_at_scale ] || CHAPTERS+=("$name")
  done
fi
for name in "${CHAPTERS[@]}"; do
  if [ ! -f "$ROOT/book/$name.ipynb" ]; then
    echo "reproduce: book/$name.ipynb does not exist" >&2
    exit 2
  fi
done

case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
[ "$DRY_RUN" = 1 ] || mkdir -p "$OUT"
export MPLBACKEND=Agg # figures render headless

echo "reproduce: ${#CHAPTERS[@]} chapter(s), profile $PROFILE, device $DEVICE, into $OUT"
for name in "${CHAPTERS[@]}"; do
  done_file="$OUT/$name.done"
  if [ -f "$done_file" ] && [ "$FORCE" = 0 ]; then
    echo "reproduce: $name already done ($done_file); --force re-runs it"
    continue
  fi
  cmd=("$PAPERMILL" "$ROOT/book/$name.ipynb" "$OUT/$name.ipynb"
    -p profile "$PROFILE" -p device "$DEVICE"
    -k savl-book --cwd "$ROOT/book" --log-output --request-save-on-cell-execute --no-progress-bar)
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
    continue
  fi
  echo "reproduce: $name ..."
  start=$(date +%s)
  rc=0
  "${cmd[@]}" >"$OUT/$name.log" 2>&1 || rc=$?
  seconds=$(($(date +%s) - start))
  if [ "$rc" -ne 0 ]; then
    why="a cell raised"
    [ "$rc" -eq 138 ] && why="the kernel died"
    echo "reproduce: FAILED at $name after ${seconds} s (papermill exit $rc: $why)." >&2
    echo "reproduce: the executed notebook, failing cell marked, is $OUT/$name.ipynb; its log is $OUT/$name.log:" >&2
    tail -n 15 "$OUT/$name.log" >&2
    exit "$rc"
  fi
  tmp="$done_file.tmp"
  printf '{"chapter": "%s", "profile": "%s", "device": "%s", "seconds": %d, "finished_utc": "%s"}\n' \
    "$name" "$PROFILE" "$DEVICE" "$seconds" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$tmp"
  mv -f "$tmp" "$done_file" # atomic: a .done file is complete or absent
  echo "reproduce: $name done in ${seconds} s"
done
[ "$DRY_RUN" = 1 ] || echo "reproduce: all ${#CHAPTERS[@]} chapter(s) done; outputs in $OUT"
