#!/usr/bin/env bash
# Benchmark of static word vectors read from a big text file (issue 11): a generated 2,000,000 x 200
# word2vec text file with a header (bench/vectors_data.py: Chinese and Latin words, values with 6
# decimals as Tencent AI Lab's file writes them, ~3.8 GB) and a 50,000-word target vocabulary
# (3/5 in the file, 2/5 Chinese words it lacks). Measures, warm page cache, the median of RUNS runs
# after one warm-up of each:
#   - `wc -l` on the file (the yardstick: the issue asks for at most 2x its wall time);
#   - `embed-transplant --model FILE --vocab V` (static vectors as the source);
#   - `embed-transplant --model <bert-base-chinese-sized checkpoint> --aux-vectors FILE --vocab V`
#     (the guide path, bench/make_checkpoint.py's checkpoint) when BENCH_GUIDE=1.
# Peak RSS from /usr/bin/time; the output's size for the "output + 64 MB" target. Prints figures;
# asserts nothing. The machine is shared: the load average is printed with the figures.
#
# Environment: BENCH_DIR (default /tmp/embed-transplant-bench; data in $BENCH_DIR/vectors),
# BENCH_BIN, BENCH_PYTHON, BENCH_RUNS (3), BENCH_ROWS (2000000), BENCH_GUIDE (0).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/embed-transplant-bench}
PY=${BENCH_PYTHON:-/root/.cache/embed-transplant/venv/bin/python}
BIN=${BENCH_BIN:-$REPO/target/release/embed-transplant}
RUNS=${BENCH_RUNS:-3}
ROWS=${BENCH_ROWS:-2000000}
DIR=$BENCH_DIR/vectors

"$PY" "$SCRIPT_DIR/vectors_data.py" "$DIR" "$ROWS" 200 50000
[[ -x "$BIN" ]] || (cd "$REPO" && nice cargo build --release)
FILE=$DIR/vectors-${ROWS}x200.txt
VOCAB=$DIR/target-50000.txt
OUT=$DIR/out.safetensors

# median of the first column of stdin
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# measure NAME CMD...: one warm-up, then RUNS runs; prints "median_wall max_rss_mb"
measure() {
    local name=$1
    shift
    "$@" >/dev/null
    : >"$DIR/$name.times"
    for _ in $(seq 1 "$RUNS"); do
        /usr/bin/time -f "%e %M" -a -o "$DIR/$name.times" "$@" >/dev/null
    done
    local wall rss
    wall=$(median <"$DIR/$name.times")
    rss=$(awk '{ if ($2 > m) m = $2 } END { printf "%.0f", m / 1024 }' "$DIR/$name.times")
    echo "$wall $rss"
}

echo "file: $FILE ($(($(stat -c %s "$FILE") / 1000000)) MB, $(head -n 1 "$FILE")); target: $VOCAB ($(wc -l <"$VOCAB") lines)"
echo "load average before: $(cut -d ' ' -f 1-3 /proc/loadavg); $(nproc) cores"
read -r wc_wall wc_rss < <(measure wc wc -l "$FILE")
read -r src_wall src_rss < <(measure source "$BIN" -m "$FILE" -v "$VOCAB" -o "$OUT" --force -q)
"$BIN" -m "$FILE" -v "$VOCAB" -o "$OUT" --force --json -q >"$DIR/source.json"
out_mb=$(($(stat -c %s "$OUT") / 1000000))
echo
echo "| run (median of $RUNS, warm cache) | wall s | x wc -l | peak RSS MB | target RSS MB (output + 64) |"
echo "|---|---:|---:|---:|---:|"
echo "| wc -l | $wc_wall | 1.0 | $wc_rss | |"
echo "| --model FILE (source; output $out_mb MB) | $src_wall | $(awk "BEGIN { printf \"%.1f\", $src_wall / $wc_wall }") | $src_rss | $((out_mb + 64)) |"
if [[ "${BENCH_GUIDE:-0}" == 1 ]]; then
    "$PY" "$SCRIPT_DIR/make_checkpoint.py" "$BENCH_DIR" >&2
    read -r g_wall g_rss < <(measure guide "$BIN" -m "$BENCH_DIR/st" -v "$VOCAB" -o "$DIR/guide.safetensors" --aux-vectors "$FILE" --force -q)
    g_mb=$(($(stat -c %s "$DIR/guide.safetensors") / 1000000))
    echo "| --aux-vectors FILE (guide of a [21128, 768] checkpoint; output $g_mb MB) | $g_wall | $(awk "BEGIN { printf \"%.1f\", $g_wall / $wc_wall }") | $g_rss | $((g_mb + 64)) |"
fi
echo
"$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print('source run:', d['counts'], 'kept', d['static_vectors']['kept'], 'of', d['static_vectors']['vectors'], '| timings', {k: round(v, 2) for k, v in d['timings'].items()})" "$DIR/source.json"
echo "load average after: $(cut -d ' ' -f 1-3 /proc/loadavg)"
