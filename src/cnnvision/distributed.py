"""Multi-process training on torch.distributed: ``torchrun --nproc_per_node=N -m cnnvision train``.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op, so a
single process needs no launcher. gloo on CPU, nccl on GPUs.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: torch.device) -> Context:
    """Join the process group torchrun describes (once); one process is a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    ctx = Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend)
    return ctx


def mean(value: float, ctx: Context) -> float:
    """The average of a number over all processes."""
    if not ctx.active:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / ctx.world


def gather(t: torch.Tensor, ctx: Context) -> list[torch.Tensor]:
    """Every process's tensor (any first dimension), in rank order, on every process."""
    if not ctx.active:
        return [t]
    parts: list = [None] * ctx.world
    dist.all_gather_object(parts, t.cpu())
    return parts


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
