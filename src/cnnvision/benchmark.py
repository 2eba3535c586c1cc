"""Examples per second for training and inference on random data, through the same code as
``train`` (augmentation, Solver.train_step, default precision and memory format) and
``predict``."""
import time

import torch

from cnnvision.data.augment import AugmentConfig
from cnnvision.data.dataset import KeypointDataset
from cnnvision.data.layouts import KAGGLE15
from cnnvision.nets import KeypointNet, KeypointNetConfig
from cnnvision.solver import Solver, SolverConfig, predict


def benchmark(net: str = "basic_cnn", batch_size: int = 50, steps: int = 40, warmup: int = 5,
              augment: bool = True, **solver) -> dict:
    cfg = SolverConfig(batch_size=batch_size, **{k: v for k, v in solver.items() if v is not None})
    g = torch.Generator().manual_seed(0)
    n = batch_size * max(steps, warmup)
    data = KeypointDataset(torch.randint(0, 256, (n, 1, 96, 96), dtype=torch.uint8, generator=g),
                           torch.rand(n, 15, 2, generator=g) * 96, KAGGLE15,
                           augment=AugmentConfig() if augment else None)
    torch.manual_seed(0)
    model = KeypointNet(KeypointNetConfig(arch=net))
    trainer = Solver(model, data, data, cfg)
    model.train()

    def train_steps(count: int) -> float:
        chunks, noise = trainer.epoch_batches()
        start = time.perf_counter()
        for idx in chunks[:count]:
            x, y = data.batch(idx, noise)
            trainer.train_step(x, y)
        return time.perf_counter() - start

    train_steps(warmup)
    train_rate = batch_size * steps / train_steps(steps)  # n covers max(steps, warmup) batches
    kwargs = dict(batch_size=batch_size, device=trainer.device, precision=cfg.precision,
                  channels_last=cfg.channels_last)
    predict(model, data.subset(torch.arange(batch_size * warmup)), flip=False, **kwargs)
    timed = data.subset(torch.arange(batch_size * steps))
    start = time.perf_counter()
    predict(model, timed, flip=False, **kwargs)
    infer_rate = len(timed) / (time.perf_counter() - start)
    start = time.perf_counter()
    predict(model, timed, flip=True, **kwargs)
    flip_rate = len(timed) / (time.perf_counter() - start)
    return {"net": net, "batch_size": batch_size, "steps": steps, "threads": torch.get_num_threads(),
            "precision": cfg.precision, "channels_last": cfg.channels_last, "device": str(trainer.device),
            "train_examples_per_sec": round(train_rate, 1), "infer_examples_per_sec": round(infer_rate, 1),
            "infer_flip_examples_per_sec": round(flip_rate, 1)}
