#!/usr/bin/env python3
"""PyTorch reference for `embed-transplant finetune`: the same model and training, for
bench/finetune.sh.

Model (as src/train/mod.rs): tokens looked up in E (nn.Embedding, dense gradients), mean-pooled
over the real tokens (padding masked out), logits = nn.Linear (default init, U(-1/sqrt(d),
1/sqrt(d)) for W and b), CrossEntropyLoss (mean over the batch), torch.optim.Adam (betas 0.9/0.999,
eps 1e-8, no weight decay) on E, W and b. The training set is reshuffled every epoch; batches are
built inside the timed loop, as the tool does. The reported train loss of an epoch is the mean of
the batch losses weighted by batch size, during that epoch (the tool's definition); test metrics
come from the final model.

Labels are sorted by name (as the tool does). Texts are split on whitespace and looked up in the
vocabulary: for bench/finetune_data.py's data (space-separated tokens that all exist) this is
exactly the tool's segmentation.

torch.set_num_threads(THREADS) (default 2 = the machine's cores; the tool uses all cores too).

--optimizer adam (default): dense nn.Embedding gradients and torch.optim.Adam on everything.
--optimizer sparse-adam: nn.Embedding(sparse=True) with torch.optim.SparseAdam on E (only the
rows a batch touched are updated) and torch.optim.Adam on the linear layer.

Usage: finetune_torch.py --embeddings E --vocab V --train T --test T [--epochs 10] [--lr 0.01]
       [--batch-size 32] [--seed 42] [--threads 2] [--optimizer adam|sparse-adam] [--max-steps N]

--max-steps N: stop each epoch after N batches and report the epoch's time extrapolated to all of
its batches ("extrapolated_from_steps"); losses and accuracies are then of a partial run.
Prints a JSON summary on stdout.
"""
import argparse
import json
import time

import torch
from safetensors.torch import load_file


def load(path, ids):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            line = line.rstrip("\n").rstrip("\r")
            if not line or (n == 0 and line == "label\ttext"):
                continue
            label, text = line.split("\t", 1)
            rows.append((label.strip(), [ids[t] for t in text.split()]))
    return rows


def make_batch(rows, labels):
    n = len(rows)
    length = max(1, max(len(r[1]) for r in rows))
    ids = torch.zeros((n, length), dtype=torch.long)
    mask = torch.zeros((n, length))
    for i, (_, toks) in enumerate(rows):
        ids[i, : len(toks)] = torch.tensor(toks, dtype=torch.long)
        mask[i, : len(toks)] = 1.0
    counts = mask.sum(1, keepdim=True).clamp(min=1.0)
    y = torch.tensor([labels[r[0]] for r in rows], dtype=torch.long)
    return ids, mask, counts, y


class Model(torch.nn.Module):
    def __init__(self, weight, classes, sparse=False):
        super().__init__()
        self.emb = torch.nn.Embedding.from_pretrained(weight, freeze=False, sparse=sparse)
        self.linear = torch.nn.Linear(weight.shape[1], classes)

    def forward(self, ids, mask, counts):
        h = (self.emb(ids) * mask.unsqueeze(2)).sum(1) / counts
        return self.linear(h)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--embeddings", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--optimizer", choices=["adam", "sparse-adam"], default="adam")
    p.add_argument("--max-steps", type=int, default=0)
    a = p.parse_args()

    start = time.perf_counter()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    with open(a.vocab, encoding="utf-8") as f:
        vocab = {t: i for i, t in enumerate(f.read().splitlines())}
    weight = load_file(a.embeddings)["weight"].float()
    train = load(a.train, vocab)
    test = load(a.test, vocab)
    names = sorted({r[0] for r in train})
    labels = {l: i for i, l in enumerate(names)}

    sparse = a.optimizer == "sparse-adam"
    model = Model(weight, len(names), sparse)
    if sparse:
        opts = [
            torch.optim.SparseAdam([model.emb.weight], lr=a.lr),
            torch.optim.Adam(model.linear.parameters(), lr=a.lr),
        ]
    else:
        opts = [torch.optim.Adam(model.parameters(), lr=a.lr)]
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(a.seed)
    epochs = []
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=gen).tolist()
        loss_sum, correct, seen = 0.0, 0, 0
        starts = list(range(0, len(order), a.batch_size))
        steps = starts[: a.max_steps] if a.max_steps else starts
        for k in steps:
            rows = [train[i] for i in order[k : k + a.batch_size]]
            ids, mask, counts, y = make_batch(rows, labels)
            logits = model(ids, mask, counts)
            loss = loss_fn(logits, y)
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()
            loss_sum += loss.item() * len(rows)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(rows)
        e = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "seconds": (time.perf_counter() - t0) * len(starts) / len(steps),
        }
        if len(steps) < len(starts):
            e["extrapolated_from_steps"] = [len(steps), len(starts)]
        epochs.append(e)
    model.eval()
    with torch.no_grad():
        loss_sum, correct = 0.0, 0
        for k in range(0, len(test), a.batch_size):
            rows = test[k : k + a.batch_size]
            ids, mask, counts, y = make_batch(rows, labels)
            logits = model(ids, mask, counts)
            loss_sum += loss_fn(logits, y).item() * len(rows)
            correct += (logits.argmax(1) == y).sum().item()
    print(
        json.dumps(
            {
                "labels": names,
                "train_examples": len(train),
                "test_examples": len(test),
                "epochs": epochs,
                "test_loss": loss_sum / len(test),
                "test_accuracy": correct / len(test),
                "threads": torch.get_num_threads(),
                "optimizer": a.optimizer,
                "torch": torch.__version__,
                "seconds": time.perf_counter() - start,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
