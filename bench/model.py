#!/usr/bin/env python3
"""Benchmark of `--emit-model` (a benchmark, not a test: it prints figures, asserts nothing).

Cases (inputs generated once under BENCH_DIR, default /tmp/embed-transplant-bench):
  1. bert: bench/make_checkpoint.py's bert-base-chinese-sized checkpoint (407 MB f32
     safetensors, vocab.txt only) onto its 50,000-line vocabulary (default --init compose).
  2. qwen2: bench/make_qwen2.py's Qwen2-0.5B-shaped checkpoint (bf16, 3 shards, 1.26 GB, untied
     lm_head) with --extend of 20,000 Chinese words.
Each against a baseline: `cp -r` of the source directory plus `sync` of the copied files (fsync).
Wall time and peak RSS (ru_maxrss of the child, via os.wait4), median of BENCH_RUNS (default 3)
after one warm-up run. Usage: bench/model.py [BIN]  (default target/release/embed-transplant)
"""
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(os.environ.get("BENCH_DIR", "/tmp/embed-transplant-bench"))
PY = sys.executable
BIN = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "target/release/embed-transplant"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def measured(cmd):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode()
    if status != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{err}")
    return wall, ru.ru_maxrss / 1024


def case(name, src, tool_args, out):
    def baseline():
        shutil.rmtree(out, ignore_errors=True)
        os.sync()
        return measured(["sh", "-c", f'cp -r "{src}" "{out}" && sync "{out}"/*'])

    # Both start with no output directory (removed outside the timing, as for cp): with --force
    # the tool's time would include deleting the previous run's directory (0.5 s for 495 MB).
    def tool():
        shutil.rmtree(out, ignore_errors=True)
        os.sync()
        return measured([str(BIN), "-m", str(src), *tool_args, "--emit-model", str(out), "-q"])

    rows = []
    for label, fn in [("cp -r + fsync", baseline), ("embed-transplant --emit-model", tool)]:
        fn()  # warm-up
        res = [fn() for _ in range(RUNS)]
        rows.append((label, statistics.median(r[0] for r in res), max(r[1] for r in res)))
    shutil.rmtree(out, ignore_errors=True)
    base = rows[0][1]
    print(f"\n{name}\n")
    print("| | wall s (median) | peak RSS MB | time / (cp + fsync) |")
    print("|---|---:|---:|---:|")
    for label, wall, rss in rows:
        print(f"| {label} | {wall:.2f} | {rss:.0f} | {wall / base:.1f}x |")


def main():
    subprocess.run([PY, REPO / "bench/make_checkpoint.py", BENCH], check=True)
    subprocess.run([PY, REPO / "bench/make_qwen2.py", BENCH], check=True)
    if not BIN.exists():
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    src_mb = sum(f.stat().st_size for f in (BENCH / "st").iterdir()) / 1e6
    # The 50,000-line list has no [PAD]/[CLS]/...: --keep-special appends them with their rows.
    case(f"bert-base-chinese-sized ({src_mb:.0f} MB, f32) onto 50,000 words; "
         "embedding in 65 MB, out 154 MB",
         BENCH / "st", ["-v", str(BENCH / "vocab50k.txt"), "--keep-special"], BENCH / "out-bert")
    src_mb = sum(f.stat().st_size for f in (BENCH / "qwen2").iterdir()) / 1e6
    case(f"Qwen2-0.5B-shaped ({src_mb:.0f} MB, bf16, 3 shards, untied head), --extend 20,000 words; "
         "embedding in 272 MB, out 308 MB (and the head likewise)",
         BENCH / "qwen2", ["-v", str(BENCH / "words20k.txt"), "--extend"], BENCH / "out-qwen2")


if __name__ == "__main__":
    main()
