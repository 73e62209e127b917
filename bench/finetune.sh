#!/usr/bin/env bash
# `embed-transplant finetune` against a PyTorch script doing the same training (a benchmark, not a
# test: it prints figures and asserts nothing about them).
#
# The design document's worked example: vocabulary 10,000 tokens, dim 300, 1,000 examples of 20
# tokens (800 train / 200 test, 4 classes decided by which keyword tokens occur; see
# bench/finetune_data.py), Adam lr 0.01, batch 32, 10 epochs. The PyTorch side
# (bench/finetune_torch.py) is nn.Embedding + masked mean + nn.Linear + CrossEntropyLoss +
# torch.optim.Adam, reshuffled each epoch, with torch.set_num_threads(2) (the machine's cores; the
# tool's candle backend uses every core as well).
#
# Usage: bench/finetune.sh
#
# Environment:
#   FT_DIR      work dir (default /tmp/embed-transplant-bench/finetune); data generated once, reused
#   FT_RUNS     runs of each side (default 3); times are over all runs, losses/accuracies from run 1
#   FT_THREADS  torch threads (default 2)
#   FT_TUNABLES glibc malloc tunables for a third column, the tool run again with
#               GLIBC_TUNABLES set to this (default: mmap threshold 32 MiB, trim threshold 4 GiB,
#               so freed optimiser temporaries stay in the heap instead of being unmapped and
#               page-faulted in again); empty: no third column
#   BENCH_BIN   binary (default target/release/embed-transplant, built if missing)
#   BENCH_PYTHON python with torch, numpy, safetensors
#               (default /root/.cache/embed-transplant/venv/bin/python)
#
# Peak RSS and wall time per process come from GNU time (`/usr/bin/time -v`; `apt-get install -y
# time`), else from Python's os.wait4 rusage.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
DIR=${FT_DIR:-/tmp/embed-transplant-bench/finetune}
PY=${BENCH_PYTHON:-/root/.cache/embed-transplant/venv/bin/python}
BIN=${BENCH_BIN:-$REPO/target/release/embed-transplant}
RUNS=${FT_RUNS:-3}
THREADS=${FT_THREADS:-2}
TUNABLES=${FT_TUNABLES-glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296}
EPOCHS=10 LR=0.01 BS=32 SEED=42

log() { printf '[finetune-bench] %s\n' "$*" >&2; }

mkdir -p "$DIR/out" "$DIR/logs"
"$PY" "$SCRIPT_DIR/finetune_data.py" "$DIR"

if [[ ! -x "$BIN" ]]; then
    if [[ -n "${BENCH_BIN:-}" ]]; then
        log "BENCH_BIN=$BIN is not an executable"
        exit 1
    fi
    log "building the release binary (cargo build --release)"
    (cd "$REPO" && nice cargo build --release)
fi

if [[ -x /usr/bin/time ]] && /usr/bin/time -v true >/dev/null 2>&1; then
    MEASURE=gnu-time
else
    MEASURE=python
    log "GNU time not found (install: apt-get install -y time); using Python's os.wait4 rusage"
fi

# measured OUT_JSON TIME_FILE CMD... : stdout -> OUT_JSON;
# "wall_seconds peak_rss_kb user_seconds system_seconds minor_page_faults" -> TIME_FILE.
measured() {
    local out=$1 tf=$2
    shift 2
    local err=${out%.json}.stderr
    if [[ $MEASURE == gnu-time ]]; then
        local t0 t1
        t0=$(date +%s%N)
        if ! /usr/bin/time -v -o "$tf.raw" "$@" >"$out" 2>"$err"; then
            log "command failed: $*"
            cat "$err" >&2
            return 1
        fi
        t1=$(date +%s%N)
        awk -v a="$t0" -v b="$t1" -F': *' '
            /Maximum resident set size/ { rss = $2 }
            /User time/ { u = $2 }
            /System time/ { s = $2 }
            /Minor \(reclaiming a frame\) page faults/ { m = $2 }
            END { printf "%.4f %d %s %s %d\n", (b - a) / 1e9, rss, u, s, m }' "$tf.raw" >"$tf"
    else
        "$PY" - "$tf" "$out" "$@" 2>"$err" <<'EOF' || { log "command failed: $*"; cat "$err" >&2; return 1; }
import os, sys, time
tf, out, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
t0 = time.perf_counter()
with open(out, "wb") as f:
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, f.fileno(), 1)])
    _, status, ru = os.wait4(pid, 0)
with open(tf, "w") as f:
    f.write(f"{time.perf_counter() - t0:.4f} {ru.ru_maxrss} {ru.ru_utime:.2f} {ru.ru_stime:.2f} {ru.ru_minflt}\n")
sys.exit(os.waitstatus_to_exitcode(status))
EOF
    fi
}

RUST_CMD=("$BIN" finetune --embeddings "$DIR/embeddings.safetensors" -v "$DIR/vocab.txt"
    --train "$DIR/train.tsv" --test "$DIR/test.tsv" --epochs $EPOCHS --lr $LR --batch-size $BS
    --seed $SEED --json -q -o "$DIR/out/finetuned.safetensors" --force)
TORCH_CMD=("$PY" "$SCRIPT_DIR/finetune_torch.py" --embeddings "$DIR/embeddings.safetensors"
    --vocab "$DIR/vocab.txt" --train "$DIR/train.tsv" --test "$DIR/test.tsv" --epochs $EPOCHS
    --lr $LR --batch-size $BS --seed $SEED --threads "$THREADS")

for ((i = 1; i <= RUNS; i++)); do
    log "run $i/$RUNS: embed-transplant finetune"
    measured "$DIR/out/rust.$i.json" "$DIR/logs/rust.$i.time" "${RUST_CMD[@]}"
    if [[ -n $TUNABLES ]]; then
        log "run $i/$RUNS: embed-transplant finetune, GLIBC_TUNABLES=$TUNABLES"
        measured "$DIR/out/rust_tuned.$i.json" "$DIR/logs/rust_tuned.$i.time" env GLIBC_TUNABLES="$TUNABLES" "${RUST_CMD[@]}"
    fi
    log "run $i/$RUNS: PyTorch"
    measured "$DIR/out/torch.$i.json" "$DIR/logs/torch.$i.time" "${TORCH_CMD[@]}"
done

echo
echo "## finetune: embed-transplant vs PyTorch (design document's worked example)"
echo
echo "- data: $DIR (vocab 10,000 x dim 300, 800 train / 200 test, 20 tokens each, 4 classes)"
echo "- settings: Adam lr $LR, batch $BS, $EPOCHS epochs, seed $SEED, reshuffled each epoch"
echo "- binary: $BIN ($("$BIN" --version 2>/dev/null | head -n1 || echo '?')), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted src changes')"
echo "- PyTorch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null), torch.set_num_threads($THREADS)"
echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- $RUNS run(s) each, measured with $MEASURE"
echo
echo "Commands:"
echo
echo '```'
printf '%q ' "${RUST_CMD[@]}"
echo
if [[ -n $TUNABLES ]]; then
    printf 'GLIBC_TUNABLES=%q ' "$TUNABLES"
    printf '%q ' "${RUST_CMD[@]}"
    echo
fi
printf '%q ' "${TORCH_CMD[@]}"
echo
echo '```'
echo
"$PY" - "$DIR" "$RUNS" "$TUNABLES" <<'EOF'
import json, statistics, sys

d, runs, tuned = sys.argv[1], int(sys.argv[2]), bool(sys.argv[3])
sides = ["rust"] + (["rust_tuned"] if tuned else []) + ["torch"]
heads = {"rust": "embed-transplant finetune", "rust_tuned": "embed-transplant, GLIBC_TUNABLES", "torch": "PyTorch"}
cols = {}
for side in sides:
    reps = [json.load(open(f"{d}/out/{side}.{i}.json")) for i in range(1, runs + 1)]
    times = [tuple(map(float, open(f"{d}/logs/{side}.{i}.time").read().split())) for i in range(1, runs + 1)]
    epoch_s = [e["seconds"] for r in reps for e in r["epochs"]]
    totals = [sum(e["seconds"] for e in r["epochs"]) for r in reps]
    first = reps[0]
    cols[side] = [
        f"{1000 * statistics.mean(epoch_s):.1f} ms (min {1000 * min(epoch_s):.1f}, max {1000 * max(epoch_s):.1f})",
        f"{statistics.median(totals):.3f} s",
        f"{statistics.median(t[0] for t in times):.3f} s",
        f"{max(t[1] for t in times) / 1024:.0f} MiB",
        f"{statistics.median(t[2] for t in times):.1f} s + {statistics.median(t[3] for t in times):.1f} s",
        f"{statistics.median(t[4] for t in times) / 1e6:.2f} M",
        f"{first['epochs'][-1]['train_loss']:.4f}",
        f"{100 * first['epochs'][-1]['train_accuracy']:.1f}%",
        f"{first['test_loss']:.4f}",
        f"{100 * first['test_accuracy']:.1f}%",
        " / ".join(f"{e['train_loss']:.3f}" for e in first["epochs"]),
    ]
names = [
    "time per epoch (mean over all epochs of all runs)",
    "10 epochs of training (median over runs)",
    "whole process, wall (median over runs)",
    "peak RSS (max over runs)",
    "CPU time, user + system (median over runs)",
    "minor page faults (median over runs)",
    "final train loss (epoch 10, run 1)",
    "final train accuracy (epoch 10, run 1)",
    "test loss (run 1)",
    "test accuracy (run 1)",
    "train loss by epoch (run 1)",
]
print("| | " + " | ".join(heads[s] for s in sides) + " |")
print("|---" * (len(sides) + 1) + "|")
for i, n in enumerate(names):
    print(f"| {n} | " + " | ".join(cols[s][i] for s in sides) + " |")
EOF
