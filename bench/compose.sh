#!/usr/bin/env bash
# Benchmark of `--init compose` on a big word-level vocabulary: the 349,046 words of jieba's
# dictionary (pip package jieba, jieba/dict.txt, first column) against the bert-base-chinese-sized
# checkpoint that bench/run.sh generates. Prints figures; asserts nothing.
#
# Environment: BENCH_DIR, BENCH_BIN, BENCH_PYTHON, BENCH_RUNS as in bench/run.sh.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/embed-transplant-bench}
PY=${BENCH_PYTHON:-/root/.cache/embed-transplant/venv/bin/python}
BIN=${BENCH_BIN:-$REPO/target/release/embed-transplant}
RUNS=${BENCH_RUNS:-3}

"$PY" "$SCRIPT_DIR/make_checkpoint.py" "$BENCH_DIR" >&2
[[ -x "$BIN" ]] || (cd "$REPO" && nice cargo build --release)
WORDS=$BENCH_DIR/jieba-words.txt
if [[ ! -s "$WORDS" ]]; then
    "$PY" - "$WORDS" <<'PY'
import sys, pathlib, jieba
d = pathlib.Path(jieba.__file__).parent / "dict.txt"
words = [l.split(" ")[0] for l in d.read_text("utf-8").split("\n") if l.strip()]
pathlib.Path(sys.argv[1] + ".tmp").write_text("\n".join(words) + "\n", "utf-8")
pathlib.Path(sys.argv[1] + ".tmp").rename(sys.argv[1])
PY
fi
echo "target: $(wc -l <"$WORDS") lines of jieba/dict.txt; source: $BENCH_DIR/st (vocab.txt, [21128, 768] f32)"
echo
echo "| run | wall s | peak RSS MB | output MB | counts |"
echo "|---|---:|---:|---:|---|"
for i in $(seq 1 "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$BENCH_DIR/compose.time" \
        "$BIN" -m "$BENCH_DIR/st" -v "$WORDS" -o "$BENCH_DIR/out/compose.safetensors" --force --init compose --json -q \
        >"$BENCH_DIR/compose.json"
    read -r secs kb <"$BENCH_DIR/compose.time"
    counts=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['counts'])" "$BENCH_DIR/compose.json")
    out_mb=$(( $(stat -c %s "$BENCH_DIR/out/compose.safetensors") / 1000000 ))
    echo "| $i | $secs | $((kb / 1024)) | $out_mb | $counts |"
done
