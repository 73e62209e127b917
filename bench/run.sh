#!/usr/bin/env bash
# Benchmark of embed-transplant on a bert-base-chinese-sized checkpoint (a benchmark, not a
# test: it prints figures and asserts nothing about them).
#
# Usage: bench/run.sh [extra embed-transplant args...]
#
# Environment:
#   BENCH_DIR     work dir for generated inputs and outputs (default /tmp/embed-transplant-bench);
#                 the ~400 MB checkpoints are generated once and reused on later runs
#   BENCH_EXTRA   extra args for the binary, word-split (e.g. BENCH_EXTRA="--init mean");
#                 args given on the command line are appended after these. When neither
#                 contains --init, `--init random` is passed.
#   BENCH_BIN     binary to run (default: target/release/embed-transplant, built if missing)
#   BENCH_PYTHON  python with numpy, torch, jieba (default /root/.cache/embed-transplant/venv/bin/python)
#   BENCH_RUNS    measured runs per case after one warm-up (default 3)
#   BENCH_MEASURE python: force the Python rusage fallback even when GNU time exists
#   BENCH_COLD    1: drop the page cache (needs root) before every measured run; default 0 =
#                 warm cache
#
# Peak RSS and wall time come from GNU time (`/usr/bin/time -v`; install it with
# `apt-get install -y time`); without it the script falls back to os.wait4's rusage in Python.
set -euo pipefail

script_start=$(date +%s%N)
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/embed-transplant-bench}
PY=${BENCH_PYTHON:-/root/.cache/embed-transplant/venv/bin/python}
BIN=${BENCH_BIN:-$REPO/target/release/embed-transplant}
RUNS=${BENCH_RUNS:-3}
COLD=${BENCH_COLD:-0}

read -r -a EXTRA <<<"${BENCH_EXTRA:-}"
EXTRA+=("$@")
INIT=(--init random)
for a in ${EXTRA[@]+"${EXTRA[@]}"}; do
    case "$a" in --init | --init=*) INIT=() ;; esac
done

log() { printf '[bench] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- inputs
mkdir -p "$BENCH_DIR/out" "$BENCH_DIR/logs"
log "inputs under $BENCH_DIR (generated once, then reused)"
"$PY" "$SCRIPT_DIR/make_checkpoint.py" "$BENCH_DIR"
VOCAB=$BENCH_DIR/vocab50k.txt
ST_DIR=$BENCH_DIR/st
BIN_DIR=$BENCH_DIR/bin

if [[ ! -x "$BIN" ]]; then
    if [[ -n "${BENCH_BIN:-}" ]]; then
        log "BENCH_BIN=$BIN is not an executable"
        exit 1
    fi
    log "building the release binary (cargo build --release)"
    (cd "$REPO" && nice cargo build --release)
fi

# ---------------------------------------------------------------- measuring
if [[ "${BENCH_MEASURE:-}" != python ]] && [[ -x /usr/bin/time ]] && /usr/bin/time -v true >/dev/null 2>&1; then
    MEASURE=gnu-time
else
    MEASURE=python
    log "GNU time not found (install: apt-get install -y time); using Python's os.wait4 rusage"
fi

drop_caches() {
    [[ "$COLD" == 1 ]] || return 0
    sync
    if ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        log "cannot drop the page cache (not root?); numbers are warm-cache"
        COLD=failed
    fi
}

# run_measured LOG CMD... -> prints "WALL_SECONDS PEAK_RSS_KB"; the command's stderr goes to LOG.
run_measured() {
    local logf=$1
    shift
    local tf=$BENCH_DIR/logs/time.out t0 t1 rss
    if [[ $MEASURE == gnu-time ]]; then
        t0=$(date +%s%N)
        if ! /usr/bin/time -v -o "$tf" "$@" >/dev/null 2>"$logf"; then
            log "command failed: $*"
            cat "$logf" >&2
            return 1
        fi
        t1=$(date +%s%N)
        rss=$(awk -F': *' '/Maximum resident set size/ {print $2}' "$tf")
        awk -v a="$t0" -v b="$t1" -v r="$rss" 'BEGIN { printf "%.4f %d\n", (b - a) / 1e9, r }'
    else
        if ! "$PY" - "$tf" "$@" 2>"$logf" <<'EOF'; then
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
with open(os.devnull, "wb") as devnull:
    pid = os.posix_spawnp(argv[0], argv, os.environ,
                          file_actions=[(os.POSIX_SPAWN_DUP2, devnull.fileno(), 1)])
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as f:
    f.write(f"{wall:.4f} {ru.ru_maxrss}\n")  # ru_maxrss is in KiB on Linux
sys.exit(os.waitstatus_to_exitcode(status))
EOF
            log "command failed: $*"
            cat "$logf" >&2
            return 1
        fi
        cat "$tf"
    fi
}

# Safetensors data-section size of a produced output, in bytes (the matrix; header excluded).
st_data_bytes() {
    "$PY" - "$1" <<'EOF'
import json, os, struct, sys
with open(sys.argv[1], "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
print(sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"))
EOF
}

declare -a ROWS=()
CMDS=()

# bench_case NAME OUTFILE CMD... : one warm-up, then $RUNS measured runs; appends to ROWS
# "name|median_wall|max_rss_kb|output_bytes".
bench_case() {
    local name=$1 outf=$2
    shift 2
    local slug=${name//[^A-Za-z0-9]/_}
    if [[ $1 == bash && ${2:-} == -c ]]; then
        CMDS+=("$name: $3")
    else
        CMDS+=("$name: $(printf '%q ' "$@")")
    fi
    [[ $outf == baseline:* ]] || rm -f "$outf" # so a stale output can never be measured
    log "$name: warm-up"
    run_measured "$BENCH_DIR/logs/$slug.warmup.log" "$@" >/dev/null
    local walls=() rss_max=0 i res w r
    for ((i = 1; i <= RUNS; i++)); do
        drop_caches
        res=$(run_measured "$BENCH_DIR/logs/$slug.$i.log" "$@")
        read -r w r <<<"$res"
        walls+=("$w")
        if ((r > rss_max)); then rss_max=$r; fi
        log "$name: run $i: ${w}s, peak RSS $((r / 1024)) MiB"
    done
    local median
    median=$(printf '%s\n' "${walls[@]}" | sort -g | awk '{a[NR]=$1} END { if (NR % 2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2 }')
    local obytes
    if [[ $outf == baseline:* ]]; then
        obytes=${outf#baseline:}
    else
        obytes=$(st_data_bytes "$outf")
    fi
    ROWS+=("$name|$median|$rss_max|$obytes")
}

# ---------------------------------------------------------------- baselines
# Read the source embedding's bytes where they sit in the weights file and write an output of
# the size the tool writes (50000 x 768 x 4): the copied bytes, then zeros for the rest.
read -r ST_OFF ST_LEN BIN_OFF BIN_LEN < <("$PY" -c '
import json, sys
o = json.load(open(sys.argv[1]))
print(o["safetensors"]["offset"], o["safetensors"]["length"], o["bin"]["offset"], o["bin"]["length"])
' "$BENCH_DIR/offsets.json")
OUT_ROWS=$(grep -c '' "$VOCAB")
OUT_BYTES=$((OUT_ROWS * 768 * 4))

baseline_cmd() { # SRC OFF LEN DST [CONV]
    printf 'rm -f %q && ' "$4"
    printf 'dd if=%q of=%q bs=4M iflag=skip_bytes,count_bytes skip=%d count=%d status=none && ' "$1" "$4" "$2" "$3"
    printf 'dd if=/dev/zero of=%q bs=4M iflag=count_bytes count=%d oflag=append conv=%s status=none' "$4" $((OUT_BYTES - $3)) "${5:-notrunc}"
}

bench_case "baseline dd (safetensors)" "baseline:$OUT_BYTES" \
    bash -c "$(baseline_cmd "$ST_DIR/model.safetensors" "$ST_OFF" "$ST_LEN" "$BENCH_DIR/out/baseline-st.bin")"
bench_case "baseline dd (.bin)" "baseline:$OUT_BYTES" \
    bash -c "$(baseline_cmd "$BIN_DIR/pytorch_model.bin" "$BIN_OFF" "$BIN_LEN" "$BENCH_DIR/out/baseline-bin.bin")"
# The tool fsyncs its output before renaming it into place; so does this baseline.
bench_case "baseline dd + fsync (safetensors)" "baseline:$OUT_BYTES" \
    bash -c "$(baseline_cmd "$ST_DIR/model.safetensors" "$ST_OFF" "$ST_LEN" "$BENCH_DIR/out/baseline-st-sync.bin" notrunc,fsync)"

# ---------------------------------------------------------------- the tool
ARGS=(--force ${INIT[@]+"${INIT[@]}"} -q ${EXTRA[@]+"${EXTRA[@]}"})
bench_case "embed-transplant model.safetensors" "$BENCH_DIR/out/st.safetensors" \
    "$BIN" -m "$ST_DIR" -v "$VOCAB" -o "$BENCH_DIR/out/st.safetensors" "${ARGS[@]}"
bench_case "embed-transplant pytorch_model.bin" "$BENCH_DIR/out/bin.safetensors" \
    "$BIN" -m "$BIN_DIR" -v "$VOCAB" -o "$BENCH_DIR/out/bin.safetensors" "${ARGS[@]}"

# ---------------------------------------------------------------- report
script_end=$(date +%s%N)
cache_state="warm page cache"
[[ "$COLD" == 1 ]] && cache_state="page cache dropped before each measured run"
[[ "$COLD" == failed ]] && cache_state="warm page cache (dropping it failed)"

echo
echo "## embed-transplant benchmark"
echo
echo "- binary: $BIN ($("$BIN" --version 2>/dev/null | head -n1 || echo '?')), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted src changes')"
echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "- source: [21128, 768] f32 embedding in a $(du -m "$ST_DIR/model.safetensors" | cut -f1) MiB checkpoint; target vocab: $OUT_ROWS lines"
echo "- $RUNS measured runs per case after one warm-up, $cache_state, measured with $MEASURE"
echo "- tool args: ${ARGS[*]}"
echo
echo "| case | wall s (median of $RUNS) | peak RSS MB | output matrix MB | RSS / (2·output + 64 MB) | time / baseline | time / baseline + fsync |"
echo "|---|---:|---:|---:|---:|---:|---:|"
base_st=$(cut -d'|' -f2 <<<"${ROWS[0]}")
base_bin=$(cut -d'|' -f2 <<<"${ROWS[1]}")
base_sync=$(cut -d'|' -f2 <<<"${ROWS[2]}")
for row in "${ROWS[@]}"; do
    IFS='|' read -r name wall rss obytes <<<"$row"
    base=$base_st
    [[ $name == *.bin* ]] && base=$base_bin
    awk -v n="$name" -v w="$wall" -v r="$rss" -v o="$obytes" -v b="$base" -v s="$base_sync" 'BEGIN {
        rss_mb = r * 1024 / 1e6; out_mb = o / 1e6
        printf "| %s | %.3f | %.1f | %.1f | %.2f | %.1f× | %.1f× |\n", n, w, rss_mb, out_mb, rss_mb / (2 * out_mb + 64), w / b, w / s
    }'
done
echo
echo "MB = 10^6 bytes. Peak RSS is the largest of the measured runs. Each case's time ratio is"
echo "against the baseline for the same file format (dd reading the embedding's bytes at their"
echo "offset and writing an output of the same size)."
echo
echo "Commands:"
for c in "${CMDS[@]}"; do echo "- \`${c% }\`"; done
echo
awk -v a="$script_start" -v b="$script_end" 'BEGIN { printf "Total script time: %.1f s\n", (b - a) / 1e9 }'
