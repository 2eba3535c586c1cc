"""Each speed lever of the default training and prediction path, switched off one at a time.

    python benchmarks/levers.py [--steps 30]

Runs ``cnnvision.benchmark.benchmark`` (basic_cnn, batch 50) in this process for: the
defaults; fp32 instead of bf16 autocast; contiguous (NCHW) instead of channels-last tensors;
an unfused Adam step; one thread instead of two. Prints one JSON line per variant.
"""
import argparse
import json

import torch

from cnnvision import solver
from cnnvision.benchmark import benchmark


def unfused_optimizer(params, cfg):
    return torch.optim.AdamW(params, cfg.lr, weight_decay=cfg.weight_decay, foreach=False, fused=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--net", default="basic_cnn")
    a = ap.parse_args()
    threads = torch.get_num_threads()
    variants = [
        ("defaults", {}, None, threads),
        ("fp32", {"precision": "fp32"}, None, threads),
        ("nchw", {"channels_last": False}, None, threads),
        ("unfused adam", {}, unfused_optimizer, threads),
        ("one thread", {}, None, 1),
    ]
    fused = solver.make_optimizer
    for name, kwargs, optimizer, n in variants:
        solver.make_optimizer = optimizer or fused
        torch.set_num_threads(n)
        r = benchmark(a.net, 50, a.steps, **kwargs)
        print(json.dumps({"variant": name, "train_examples_per_sec": r["train_examples_per_sec"],
                          "infer_examples_per_sec": r["infer_examples_per_sec"]}), flush=True)
    solver.make_optimizer = fused
    torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
