#!/usr/bin/env bash
# Memory of `--emit-model --extend` at scale (issue 19 item 6): 1,000,000 new words (random 2-4
# character Chinese words, seeded, unique) appended to the bundled tiny BERT (fixtures/
# tiny-bert-chinese, vocab.txt 21,128 tokens, hidden 32), against the matrix-only run of the same
# vocabulary. Peak RSS and wall time from /usr/bin/time -v; the budget is the matrix run's peak +
# the written tokenizer.json's size + 128 MB. Prints figures; asserts nothing.
#
# Environment: BENCH_DIR (/tmp/embed-transplant-bench), BENCH_BIN (target/release/embed-transplant),
# BENCH_PYTHON, BENCH_WORDS (1000000), BENCH_RUNS (1).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/embed-transplant-bench}
PY=${BENCH_PYTHON:-python3}
BIN=${BENCH_BIN:-$REPO/target/release/embed-transplant}
N=${BENCH_WORDS:-1000000}
RUNS=${BENCH_RUNS:-1}
mkdir -p "$BENCH_DIR"
[[ -x "$BIN" ]] || (cd "$REPO" && nice cargo build --release)
WORDS=$BENCH_DIR/extend-words-$N.txt
if [[ ! -s "$WORDS" ]]; then
    "$PY" - "$WORDS" "$N" <<'PY'
import random, sys, pathlib
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(19)
chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3500)]
seen, words = set(), []
while len(words) < n:
    w = "".join(rng.choice(chars) for _ in range(rng.randint(2, 4)))
    if w not in seen:
        seen.add(w)
        words.append(w)
pathlib.Path(out + ".tmp").write_text("\n".join(words) + "\n", "utf-8")
pathlib.Path(out + ".tmp").rename(out)
PY
fi
SRC=$REPO/fixtures/tiny-bert-chinese
run() { # label, args...
    local label=$1; shift
    rm -rf "$BENCH_DIR/extend-out" "$BENCH_DIR/extend.safetensors"
    /usr/bin/time -v -o "$BENCH_DIR/extend.time" "$BIN" -m "$SRC" -v "$WORDS" -q "$@" >/dev/null
    local kb secs
    kb=$(awk -F': ' '/Maximum resident/ {print $2}' "$BENCH_DIR/extend.time")
    secs=$(awk -F': ' '/Elapsed \(wall/ {print $2}' "$BENCH_DIR/extend.time")
    local tj=""
    [[ -f "$BENCH_DIR/extend-out/tokenizer.json" ]] && tj=$(( $(stat -c %s "$BENCH_DIR/extend-out/tokenizer.json") / 1000000 ))
    echo "| $label | $secs | $((kb / 1024)) | ${tj:+$tj MB} |"
}
echo "source: $SRC; target: $N new words ($WORDS)"
echo
echo "| run | wall (m:ss) | peak RSS MiB | tokenizer.json |"
echo "|---|---:|---:|---:|"
for _ in $(seq 1 "$RUNS"); do
    run "matrix only (-o)" -o "$BENCH_DIR/extend.safetensors"
    run "--extend --emit-model" --extend --emit-model "$BENCH_DIR/extend-out"
done
