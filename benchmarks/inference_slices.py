"""Inference speed of basic_cnn's conv stages run on slices of N images, for a batch of 50 at
the default precision (bf16 autocast, channels-last): why ``BasicCNN.inference_slice`` is 10.

    python benchmarks/inference_slices.py [--repeats 30]
"""
import argparse
import statistics
import time

import torch

from cnnvision.nets import KeypointNet, KeypointNetConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    net = KeypointNet(KeypointNetConfig(arch="basic_cnn")).eval()
    x = torch.rand(50, 1, 96, 96).contiguous(memory_format=torch.channels_last)
    times = {n: [] for n in (50, 25, 10, 8, 5)}
    for _ in range(a.repeats):  # alternated, so drift in the machine's speed hits every setting alike
        for n in times:
            net.model.inference_slice = n
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
                start = time.perf_counter()
                net(x)
                times[n].append(time.perf_counter() - start)
    for n, t in times.items():
        print(f"slices of {n:2d}: {50 / statistics.median(t):7.0f} images/sec (median), {50 / min(t):7.0f} (best)")


if __name__ == "__main__":
    main()
