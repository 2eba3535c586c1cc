"""The Solver trains and evaluates any Net on any Dataset.

A Net is an ``nn.Module`` with ``loss(out, target)``, ``predict(x)``, ``metrics(pred, data)``
and ``primary_metric``; a Dataset has ``len()`` and ``batch(idx, generator)``. The run folder
gets config.json, metrics.csv, TensorBoard events, last.pt and best.pt; ``resume`` continues
from last.pt exactly (model, optimizer, scheduler, step, RNG; mid-epoch after ``max_steps``).

last.pt is each epoch's commit point: it holds the metric rows of every epoch so far and the
best value. It is written first, then best.pt, then metrics.csv is
rewritten from its rows, each file atomically; so a run killed at any moment leaves at worst a
best.pt or a metrics.csv one epoch behind last.pt, and ``resume`` repairs both from it (as it
does the duplicate rows and lost best.pt that earlier versions could leave).
"""
import contextlib
import copy
import csv
import functools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from cnnvision import checkpoint, distributed
from cnnvision.errors import InputError
from cnnvision.files import atomic_open, write_json
from cnnvision.nets import net_spec


@dataclass
class SolverConfig:
    epochs: int = 30              # passes over the training set
    batch_size: int = 64          # examples per step
    optimizer: str = "adamw"      # adam | adamw | sgd
    lr: float = 2e-3              # peak learning rate
    weight_decay: float = 1e-4    # decoupled for adamw, L2 for adam and sgd
    momentum: float = 0.9         # sgd only
    schedule: str = "cosine"      # cosine | step | constant, after a linear warm-up
    warmup_steps: int = 100       # steps of linear warm-up from 0
    clip_grad: float = 0.0        # max global gradient norm, 0 = no clipping
    ema: float = 0.0              # decay of a moving average of the weights that is evaluated and kept, 0 = off
    patience: int = 0             # early stopping: epochs without a better val metric, 0 = off
    log_every: int = 10           # steps between log lines
    seed: int = 0                 # seeds the weights, the batch order and the augmentation
    precision: str = "auto"       # auto (bf16 where the CPU has it, fp32 otherwise) | fp32 | bf16
    channels_last: bool = True    # NHWC tensors: faster convolutions on CPU
    device: str = "cpu"           # cpu | cuda | auto
    eval_flip: bool = True        # average predictions with the mirrored image's at evaluation
    max_steps: int = 0            # stop after this many steps (smoke runs), 0 = no limit

    def __post_init__(self):
        if not 0 <= self.ema < 1:
            raise InputError(f"--ema {self.ema}: the decay must be at least 0 (off) and below 1, e.g. 0.999")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    return torch.device(name)


# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) below which it has no bf16 dot-product kernels
NO_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


@functools.cache  # the CPU does not change; autocast asks at every step and batch
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (``flags`` on x86, ``Features`` on ARM); empty
    where there is no such file."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether bf16 runs fast here: the CPU has AVX-512 BF16 or AMX, and oneDNN is not limited
    to older code. Under ``ONEDNN_MAX_CPU_ISA=AVX2`` (a machine without BF16, or how one is
    emulated) bf16 would fall back to reference kernels, many times slower than fp32."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in NO_BF16_ISAS:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@functools.cache  # a setting of the whole process: once is enough
def keep_freed_memory() -> bool:
    """Asks glibc's malloc to keep the memory torch frees for its next tensors instead of handing
    it back to the system, for the rest of this process. A training step frees and allocates the
    same large activations and gradients each time (basic_cnn at batch 50: 59 MB for the first
    stage's output alone); given back, they come again as fresh pages, which the kernel faults
    in and zeroes one by one: 6,000 to 14,400 page faults a step for basic_cnn, 0 to 1,100 with
    this (stop 30; README, Speed). Inference gains too: ``cnnvision evaluate`` of keypoints15 on
    the 3,519 Kaggle-format faces took 27.6 s against 44.6 in fp32 on AVX2 (stop 31), so
    ``predict`` below and the command line (cli.main) turn it on as well.
    False where the C library is not glibc (nothing is changed there)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    # no block from mmap (each would be unmapped when freed), and no trimming of the heap's top
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def autocast(device: torch.device, precision: str):
    """Mixed precision context: bf16 autocast where asked for (or where 'auto' finds it fast)."""
    use = precision == "bf16" or (precision == "auto" and (device.type == "cuda" or cpu_has_bf16()))
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else contextlib.nullcontext()


def make_optimizer(params, cfg: SolverConfig) -> torch.optim.Optimizer:
    # fused: one kernel per step for all parameters instead of a handful per tensor
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    elif cfg.optimizer == "adam":
        return torch.optim.Adam(params, cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    elif cfg.optimizer == "sgd":
        return torch.optim.SGD(params, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r} (use adam, adamw or sgd)")


class WarmupSchedule:
    """Learning-rate factor per step: linear warm-up, then cosine to zero, steps of 10x at 50%
    and 75%, or constant. A class (not a lambda) so LambdaLR can store it in checkpoints."""

    def __init__(self, kind: str, warmup: int, total: int):
        if kind not in ("cosine", "step", "constant"):
            raise ValueError(f"unknown schedule {kind!r} (use cosine, step or constant)")
        self.kind, self.warmup, self.total = kind, warmup, max(total, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(step / self.total, 1.0)
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        elif self.kind == "step":
            return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
        return 1.0


def predict(net, data, batch_size: int = 256, device: torch.device = torch.device("cpu"),
            precision: str = "auto", flip: bool = True, channels_last: bool = True,
            ctx: distributed.Context = distributed.Context()) -> torch.Tensor:
    """The Net's predictions for a whole dataset, in order. Under torch.distributed each process
    predicts a contiguous share and all of them get the whole answer."""
    if device.type == "cpu":
        keep_freed_memory()  # each batch's activations reuse the last one's pages
    net.eval()
    share = torch.arange(len(data)).tensor_split(ctx.world)[ctx.rank]
    outs = [torch.empty(0)]
    with torch.inference_mode(), autocast(device, precision):
        for idx in share.split(batch_size):
            x, _ = data.batch(idx)
            x = x.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            outs.append(net.predict(x, flip=flip).float().cpu())
    mine = torch.cat(outs) if len(outs) > 1 else outs[0]
    return torch.cat([p for p in distributed.gather(mine, ctx) if p.numel()])


def evaluate(net, data, batch_size: int = 256, device=torch.device("cpu"), precision: str = "auto",
             flip: bool = True, channels_last: bool = True, ctx: distributed.Context = distributed.Context()) -> dict:
    return net.metrics(predict(net, data, batch_size, device, precision, flip, channels_last, ctx), data)


class WeightAverage:
    """An exponential moving average of a net's weights and batch-norm statistics (Polyak
    averaging). Each step moves it ``1 - decay`` of the way to the net's current weights (less at
    first: the decay grows as (1 + step) / (10 + step) up to ``decay``), so it averages over about
    ``1 / (1 - decay)`` steps and evens out the noise every batch leaves in the weights."""

    def __init__(self, net, decay: float):
        self.decay = decay
        self.net = copy.deepcopy(net).requires_grad_(False)
        # the tensors of both, paired once: the optimizer and load_state_dict change them in place
        pairs = list(zip(self.net.state_dict().values(), net.state_dict().values()))
        self.floats = ([m for m, _ in pairs if m.is_floating_point()], [t for m, t in pairs if m.is_floating_point()])
        self.counts = [(m, t) for m, t in pairs if not m.is_floating_point()]  # batch counts

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the weights of the net it was made from."""
        torch._foreach_lerp_(*self.floats, 1 - min(self.decay, (1 + step) / (10 + step)))
        for mine, theirs in self.counts:
            mine.copy_(theirs)


class Solver:
    def __init__(self, net, train_set, val_set, cfg: SolverConfig, out_dir: str | Path | None = None,
                 run_config: dict | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.ctx = distributed.setup(self.device)
        if self.ctx.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.ctx.local_rank)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.net = net.to(self.device, memory_format=self.memory_format)
        # With ``ema``, the moving average of the weights is what is evaluated and kept as best.pt.
        self.average = WeightAverage(self.net, cfg.ema) if cfg.ema else None
        # What the optimizer steps through: the net itself, or its DistributedDataParallel wrapper
        # whose backward averages gradients over the processes.
        self.model = torch.nn.parallel.DistributedDataParallel(self.net) if self.ctx.active else self.net
        self.train_set, self.val_set = train_set, val_set
        self.out = Path(out_dir) if out_dir and self.ctx.main else None
        self.run_config = run_config or {}
        self.optimizer = make_optimizer(self.net.parameters(), cfg)
        self.steps_per_epoch = max(1, len(train_set) // (cfg.batch_size * self.ctx.world))
        self.schedule = WarmupSchedule(cfg.schedule, cfg.warmup_steps, self.steps_per_epoch * cfg.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.step, self.epoch, self.bad_epochs = 0, 0, 0
        self.batch = 0          # batches of the epoch in progress already trained (a max_steps stop)
        self.rng: dict = {}     # the RNG states to go on from there
        self.history: list[dict] = []  # one metrics row per epoch, as metrics.csv shows them
        name, mode = net.primary_metric
        self.best = math.inf if mode == "min" else -math.inf
        self.writer = None

    def epoch_batches(self) -> tuple[list[torch.Tensor], torch.Generator]:
        """This process's index batches for the current epoch, and the generator its augmentation
        draws from. Seeded by (seed, epoch) alone, so a resumed run and every process of a
        distributed one agree on the order; augmentation and dropout differ by process."""
        ctx, size = self.ctx, self.cfg.batch_size
        base = self.cfg.seed * 100_003 + self.epoch * 1_009
        torch.manual_seed(base + 1 + ctx.rank)  # dropout
        shuffle = torch.Generator().manual_seed(base)
        epoch_order = getattr(self.train_set, "epoch_order", None)  # sets that mix sources by share
        order = epoch_order(shuffle) if epoch_order else torch.randperm(len(self.train_set), generator=shuffle)
        # Every process takes its own slice of the same shuffle: a global batch of size * world.
        mine = order[ctx.rank::ctx.world]
        if ctx.active:
            mine = mine[: self.steps_per_epoch * size]  # equal step counts on every process
        chunks = [idx for idx in mine.split(size) if len(idx) > 1]  # batch norm cannot train on one
        return chunks, torch.Generator().manual_seed(base + 1 + ctx.rank)

    # -- one step ----------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, memory_format=self.memory_format, non_blocking=True)
        y = tuple(t.to(self.device, non_blocking=True) for t in y) if isinstance(y, tuple) else \
            y.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.precision):
            out = self.model(x)
        loss = self.net.loss(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.average is not None:
            self.average.update(self.step)
        return loss.detach()

    @property
    def evaluated(self):
        """The net that is evaluated and kept as best.pt: the weights' moving average, if any."""
        return self.average.net if self.average is not None else self.net

    # -- state ---------------------------------------------------------------------------------
    def state(self, metrics: dict) -> dict:
        averaged = {"average": {k: v.cpu() for k, v in self.average.net.state_dict().items()}} if self.average else {}
        return {
            "net": net_spec(self.net),
            "model": {k: v.cpu() for k, v in self.net.state_dict().items()},
            **averaged,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step, "epoch": self.epoch, "best": self.best, "bad_epochs": self.bad_epochs,
            "batch": self.batch, "rng": self.rng, "history": self.history,
            "metrics": metrics, "config": self.run_config,
        }

    def restore(self, path: Path) -> None:
        state = checkpoint.load(path)
        if state["net"] != net_spec(self.net):
            raise InputError(f"{path}: was trained with a different net ({state['net']['config']}); "
                             "resume with the same options")
        if "optimizer" not in state:
            raise InputError(f"{path}: holds weights only, not a training state to resume")
        self.net.load_state_dict(state["model"])
        if self.average is not None:  # a run that had none starts its average from the weights it resumes
            self.average.net.load_state_dict(state.get("average", state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        total = self.schedule.total
        self.scheduler.load_state_dict(state["scheduler"])
        self.schedule.total = total  # a resumed run may have been given more epochs
        self.step, self.epoch, self.best = state["step"], state["epoch"], state["best"]
        self.bad_epochs = state["bad_epochs"]
        self.batch, self.rng = state.get("batch", 0), state.get("rng", {})
        self.history = state["history"] if "history" in state else self.rows_on_disk()
        if self.out is not None:
            self.repair_best(state)
            self.write_metrics_csv()

    def rows_on_disk(self) -> list[dict]:
        """An earlier version's run keeps its rows only in metrics.csv, possibly with an epoch
        twice or one past last.pt: one row per epoch up to last.pt's, the latest kept."""
        file = self.out / "metrics.csv" if self.out is not None else None
        if file is None or not file.exists():
            return []
        with open(file, newline="") as f:
            rows = {}
            for row in csv.DictReader(f):
                try:
                    if 0 < int(row["epoch"]) <= self.epoch:
                        rows[int(row["epoch"])] = row
                except (KeyError, TypeError, ValueError):
                    continue
        return [rows[k] for k in sorted(rows)]

    def repair_best(self, last: dict) -> None:
        """Make best.pt hold the weights last.pt records as the best, where a kill between the
        two writes (or an earlier version) left it missing or one epoch behind."""
        name = self.net.primary_metric[0]
        path = self.out / "best.pt"
        try:
            held = checkpoint.load(path) if path.exists() else None
        except InputError:
            held = None  # unreadable: written anew below
        if held is not None and held.get("metrics", {}).get(name) == self.best:
            return
        if last["metrics"].get(name) == self.best:  # the best weights are last.pt's own
            self.save_best(last)
            print(f"repaired {path} from {self.out / 'last.pt'} (the best, step {self.step})")
        elif held is None and last["metrics"]:
            # An earlier version lost the best weights: the last ones stand in, and are the best from now on.
            self.best = last["metrics"][name]
            self.save_best(self.state(last["metrics"]))
            print(f"{path} was lost by an earlier interrupted run; it now holds last.pt's weights (step {self.step})")

    def save_best(self, state: dict) -> None:
        kept = ("net", "metrics", "config", "epoch", "step")  # the weights, not the training state
        weights = state.get("average", state["model"])  # the weights that were evaluated
        checkpoint.save(self.out / "best.pt", {**{k: state[k] for k in kept}, "model": weights})

    def write_metrics_csv(self) -> None:
        """metrics.csv, rewritten whole from the rows last.pt holds: one row per epoch, always."""
        if not self.history:
            return
        columns = list(dict.fromkeys(k for row in self.history for k in row))
        with atomic_open(self.out / "metrics.csv", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(self.history)

    # -- the loop ------------------------------------------------------------------------------
    def fit(self, resume: bool = False, run_dir: str | Path | None = None) -> dict:
        """Train to the configured epochs (or early stop); returns the last evaluation."""
        cfg, ctx = self.cfg, self.ctx
        if resume:
            last = Path(run_dir or self.out or ".") / "last.pt"
            if not last.exists():
                raise InputError(f"{last}: no such file, nothing to resume")
            self.restore(last)
            if ctx.main:
                within = f" (batch {self.batch} of epoch {self.epoch + 1})" if self.batch else ""
                print(f"resumed from {last} at epoch {self.epoch}, step {self.step}{within}")
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", self.run_config)
            self.writer = tensorboard_writer(self.out)
        metrics: dict = {}
        name, mode = self.net.primary_metric
        at_limit = bool(cfg.max_steps) and self.step >= cfg.max_steps
        if at_limit and ctx.main:
            print(f"already at step {self.step}: --max-steps {cfg.max_steps} leaves nothing to train "
                  "(give a larger one, or 0 for no limit)")
        while self.epoch < cfg.epochs and not at_limit:
            self.model.train()
            chunks, noise = self.epoch_batches()
            if self.batch:  # go on from where a max_steps stop left this epoch
                chunks = chunks[self.batch:]
                noise.set_state(self.rng["noise"])
                torch.set_rng_state(self.rng["torch"])
            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not (ctx.main and sys.stderr.isatty()))
            interval_loss, interval_n, t0 = 0.0, 0, time.perf_counter()
            done = self.batch  # batches of this epoch trained before a resume
            for idx in chunks:
                x, y = self.train_set.batch(idx, noise)
                loss = self.train_step(x, y)
                interval_loss += float(loss) * len(idx)
                interval_n += len(idx)
                bar.update()
                if self.step % cfg.log_every == 0:
                    self.log(interval_loss / interval_n, interval_n * ctx.world / (time.perf_counter() - t0), bar)
                    interval_loss, interval_n, t0 = 0.0, 0, time.perf_counter()
                self.batch += 1
                if cfg.max_steps and self.step >= cfg.max_steps and self.batch < len(chunks) + done:
                    # Stopped inside the epoch: remember where, so a resume goes on from here.
                    self.rng = {"noise": noise.get_state(), "torch": torch.get_rng_state()}
                    break
            else:
                self.batch, self.rng = 0, {}
            bar.close()
            label = self.epoch + 1
            self.epoch += 0 if self.batch else 1
            metrics = self.evaluate()
            value = metrics[name]
            improved = value < self.best if mode == "min" else value > self.best
            if improved:
                self.best, self.bad_epochs = value, 0
            elif not self.batch:
                self.bad_epochs += 1
            if ctx.main:
                shown = ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
                part = f" (stopped at batch {self.batch})" if self.batch else ""
                print(f"epoch {label}{part}: {shown}" + (" (best)" if improved else ""))
                self.record(label, metrics, improved)
            distributed.barrier(ctx)
            if cfg.max_steps and self.step >= cfg.max_steps:
                if ctx.main:
                    print(f"stopped at --max-steps {cfg.max_steps}")
                break
            if cfg.patience and self.bad_epochs >= cfg.patience:
                if ctx.main:
                    print(f"early stop: no better {name} in {cfg.patience} epochs")
                break
        if self.writer:
            self.writer.close()
        return metrics

    def log(self, loss: float, rate: float, bar) -> None:
        """The tutorial's line, with the loss averaged over the interval (and the processes)."""
        loss = distributed.mean(loss, self.ctx)
        if not self.ctx.main:
            return
        bar.write(f"step {self.step}: loss = {loss:.4f} ({rate:.1f} examples/sec)", file=sys.stdout)
        if self.writer:
            self.writer.add_scalar("train/loss", loss, self.step)
            self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
            self.writer.add_scalar("train/examples_per_sec", rate, self.step)

    def evaluate(self) -> dict:
        return evaluate(self.evaluated, self.val_set, 256, self.device, self.cfg.precision, self.cfg.eval_flip,
                        self.cfg.channels_last, self.ctx)

    def record(self, label: int, metrics: dict, improved: bool) -> None:
        """After an epoch (main process only): last.pt with this epoch's row (the commit point),
        then best.pt if it improved, then metrics.csv from last.pt's rows; TensorBoard."""
        row = {"epoch": label, "step": self.step, "lr": self.scheduler.get_last_lr()[0],
               **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        # A stopped epoch's row is replaced when the epoch is finished.
        self.history = [r for r in self.history if int(r["epoch"]) != label] + [row]
        if self.out is None:
            return
        state = self.state(metrics)
        checkpoint.save(self.out / "last.pt", state)
        if improved:
            self.save_best(state)
        self.write_metrics_csv()
        if self.writer:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(f"val/{k}", v, self.step)
            picture = self.net_picture()
            if picture is not None:
                self.writer.add_image("val/predictions", picture, self.step, dataformats="HWC")

    def net_picture(self):
        if not hasattr(self.net, "picture"):
            return None
        sample = self.val_set.subset(torch.arange(min(16, len(self.val_set))))
        return self.net.picture(sample, predict(self.evaluated, sample, device=self.device, precision=self.cfg.precision,
                                                channels_last=self.cfg.channels_last))


def train_in_folder(net, train_set, val_set, cfg: SolverConfig, out: Path, run_config: dict, resume: bool,
                    summary: str) -> bool:
    """Train ``net`` with its run folder at ``out`` (resuming if asked), after printing
    ``summary`` and the parameter count. True in the process that should report the results (the
    only one, or rank 0 under torchrun); the others have left the process group."""
    solver = Solver(net, train_set, val_set, cfg, out, run_config)
    if solver.ctx.main:
        print(f"data: {summary}; net {net.cfg.arch}, {sum(p.numel() for p in net.parameters()):,} parameters; "
              f"run folder {out}" + (f"; {solver.ctx.world} processes" if solver.ctx.active else ""))
    solver.fit(resume=resume, run_dir=out)
    distributed.shutdown()
    return solver.ctx.main


def report_best(out: Path, val_set, cfg: SolverConfig, flip: bool):
    """The run's best.pt measured on the held-out set as the run measured its epochs (its device
    and precision: a run trained in fp32 on a CPU with BF16 is not reported in bf16), written to
    metrics.json and printed: (the best net, back on the CPU; its metrics)."""
    device = resolve_device(cfg.device)
    best = checkpoint.load_net(out / "best.pt").to(device)
    metrics = evaluate(best, val_set, device=device, precision=cfg.precision, flip=flip,
                       channels_last=cfg.channels_last)
    write_json(out / "metrics.json", metrics)
    print(f"best checkpoint {out / 'best.pt'}: " + json.dumps(metrics))
    return best.cpu(), metrics


def tensorboard_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
        print("warning: tensorboard is not importable; no event files will be written", file=sys.stderr)
        return None
    return SummaryWriter(str(out / "tb"))


def resumed_solver(stored: dict, given: dict) -> dict:
    """A resumed run's solver settings: the stored ones, with ``epochs`` as given (to extend the
    run) and ``max_steps`` only as given: a stop is for the command that asked for it, so
    ``--resume`` alone goes on to the run's last epoch, and ``--resume --max-steps N`` to step N."""
    return {**stored, "max_steps": given.get("max_steps") or 0,
            **{k: given[k] for k in ("epochs",) if given.get(k) is not None}}


def solver_config(overrides: dict) -> SolverConfig:
    """A SolverConfig from the given fields (``None`` means "the default"); a name that is not a
    field is refused rather than silently dropped, so a mistyped option cannot go unnoticed."""
    known = {f.name for f in fields(SolverConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown solver setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return SolverConfig(**{k: v for k, v in overrides.items() if v is not None})
