"""Examples per second for training and inference on random data, through the same code as
``train`` (augmentation, Solver.train_step, default precision and memory format) and
``predict``."""
import os
import time

import torch

from cnnvision.data.augment import AugmentConfig
from cnnvision.data.dataset import KeypointDataset
from cnnvision.data.layouts import KAGGLE15
from cnnvision.nets import KeypointNet, KeypointNetConfig
from cnnvision.solver import Solver, SolverConfig, predict


def machine() -> dict:
    """What the figures depend on: the CPU's vector and matrix features (from /proc/cpuinfo on
    Linux, torch's own report elsewhere), the threads, torch's build, and any GPU."""
    from cnnvision.solver import cpu_flags, cpu_has_bf16
    flags = cpu_flags()
    wanted = {"avx2": "avx2", "avx512f": "avx512", "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16",
              "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni", "asimd": "neon", "bf16": "arm_bf16"}
    info = {"cpu_features": sorted(name for flag, name in wanted.items() if flag in flags),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_fast": cpu_has_bf16(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):  # oneDNN limited to older code (how an AVX2 CPU is emulated)
        info["onednn_max_isa"] = os.environ["ONEDNN_MAX_CPU_ISA"]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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
    from cnnvision.solver import cpu_has_bf16
    chosen = cfg.precision if cfg.precision != "auto" else ("bf16" if cpu_has_bf16() else "fp32")
    return {"net": net, "batch_size": batch_size, "steps": steps, "machine": machine(),
            "precision": cfg.precision, "precision_used": chosen, "runtime": "torch", "channels_last": cfg.channels_last, "device": str(trainer.device),
            "train_examples_per_sec": round(train_rate, 1), "infer_examples_per_sec": round(infer_rate, 1),
            "infer_flip_examples_per_sec": round(flip_rate, 1)}


def demo_photos(count: int, width: int = 640, height: int = 480, seed: int = 0) -> list:
    """``count`` width x height photos of one face each, made from nothing: a drawn face, 150 to
    250 pixels tall, on a cluttered background (for when no real photos are given)."""
    import numpy as np
    from PIL import Image

    from cnnvision.data.scenes import clutter
    from cnnvision.data.synthetic import _face_points, draw_face
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        canvas = clutter(rng, max(width, height)).crop((0, 0, width, height))
        face = draw_face(_face_points(rng, 96), 96, rng, rng).convert("RGB")
        side = int(rng.uniform(150, 250))
        side = min(side, width, height)  # a small photo gets a face that fits
        canvas.paste(face.resize((side, side), Image.Resampling.BILINEAR),
                     (int(rng.uniform(0, width - side)), int(rng.uniform(0, height - side))))
        photos.append(canvas)
    return photos


def benchmark_pipeline(paths: list[str] | None = None, count: int = 32, rounds: int = 3, width: int = 640,
                       height: int = 480, batch: int = 16, pipeline=None) -> dict:
    """Photos per second through ``predict``'s face pipeline (detector, then 68 landmarks per face)
    on width x height photos: ``paths`` fitted to that size, or drawn faces. The time is the best
    of ``rounds`` passes over all photos, in batches of ``batch`` as ``predict`` reads them;
    decoding files is not included (it depends on the files, not on cnnvision)."""
    from cnnvision import images as imgs
    from cnnvision.apps.faces import FacePipeline, resize_to
    pipeline = pipeline or FacePipeline.pretrained()
    photos = [resize_to(imgs.open_image(p, 3), width, height) for p in paths] if paths else demo_photos(count, width, height)
    faces = [len(f) for f in pipeline.predict(photos[:batch])]  # warm-up, and the faces found
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        faces = []
        for i in range(0, len(photos), batch):
            faces += [len(f) for f in pipeline.predict(photos[i:i + batch])]
        best = min(best, time.perf_counter() - start)
    return {"photos": len(photos), "size": [width, height], "batch": batch, "machine": machine(),
            "device": pipeline.device.type, "precision": pipeline.precision, "runtime": pipeline.runtime,
            "streams": pipeline.streams,
            "faces_found": sum(faces), "photos_with_one_face": sum(f == 1 for f in faces),
            "photos_per_sec": round(len(photos) / best, 1)}
