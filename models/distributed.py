"""Training on several processes: DistributedDataParallel, launched by torchrun or `shoal train --nproc N`.

A process is one rank of a distributed run when torchrun's environment says so (WORLD_SIZE > 1
with RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or when its caller initialized a process
group itself. `session` joins the group torchrun describes (NCCL on GPUs, each rank on
cuda:LOCAL_RANK; gloo on the CPU) and leaves it; `launch` starts N ranks on this machine
through torch's elastic launcher, the engine behind torchrun. The generic loop
(`shoal.models.train`) asks `world()`, splits each batch across the ranks and syncs through
the helpers below, each of which does nothing in a process alone.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from shoal.errors import TrainingError
from shoal.threads import user_fixed_openmp

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size) of this process in the initialized process group; (0, 1) alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def env_world() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as torchrun sets them; (0, 1) outside a launcher."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def check_batch(batch_size: int, world_size: int) -> None:
    """Refuse a global batch that does not split evenly into `world_size` per-rank batches."""
    if batch_size % world_size:
        fit = -(-batch_size // world_size) * world_size
        raise TrainingError(
            f"batch_size {batch_size} does not split evenly across {world_size} processes (each takes batch_size / "
            f"{world_size}, so that a step sees the same samples whatever the number of processes); pass a multiple "
            f"of {world_size}, e.g. --batch-size {fit}"
        )


def _shareable(device: torch.device) -> None:
    if device.type == "mps":
        raise TrainingError("mps has no distributed backend; train several processes with --device cpu or on cuda")
    if device.type == "cuda" and device.index is not None:
        raise TrainingError(f"--device {device}: with several processes each rank takes its own GPU "
                            "(cuda:LOCAL_RANK); pass --device cuda or auto")


def rank_device(device: torch.device, world_size: int) -> torch.device:
    """This rank's device: with several ranks, cuda is the rank's current GPU (`session` sets cuda:LOCAL_RANK)."""
    if world_size == 1:
        return device
    _shareable(device)
    return torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device


@contextmanager
def session(device: torch.device) -> Iterator[None]:
    """Join the process group of torchrun's environment for the duration, and leave it.

    Backend NCCL when `device` is cuda (this rank then works on cuda:LOCAL_RANK), gloo on the
    CPU. Nothing happens in a process alone, nor when the caller already joined a group.

    Raises:
        TrainingError: a device the ranks cannot share (mps, a numbered GPU), or too few GPUs.
    """
    _, world_size = env_world()
    if world_size == 1 or dist.is_initialized():
        yield
        return
    _shareable(device)
    local, local_size = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    options: dict[str, Any] = {}
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise TrainingError(f"local rank {local} needs cuda:{local}, but this machine has "
                                f"{torch.cuda.device_count()} GPU(s); start at most that many processes per machine")
        torch.cuda.set_device(local)
        options["device_id"] = torch.device("cuda", local)
    elif not user_fixed_openmp(os.environ):
        # Each rank inherited the machine's thread count (shoal.threads): N-fold oversubscribed undivided.
        torch.set_num_threads(max(1, torch.get_num_threads() // local_size))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **options)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` under DistributedDataParallel with several ranks (gradients averaged over them), else itself."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_sum(total: torch.Tensor, count: int) -> tuple[float, int]:
    """A loss sum and its sample count, summed over the ranks and read once: the same numbers on every rank."""
    if world()[1] == 1:
        return float(total), count
    both = torch.stack([total.to(torch.float64), torch.tensor(float(count), dtype=torch.float64, device=total.device)])
    dist.all_reduce(both)
    return float(both[0]), int(both[1])


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm's running statistics).

    DDP broadcasts them before each forward, so after an epoch's last step each rank holds the
    statistics of its own shard; synced, all ranks validate and keep one and the same model.
    """
    if world()[1] > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    """Wait until every rank is here."""
    if world()[1] > 1:
        dist.barrier()


def launch(nproc: int, entrypoint: Callable[..., T], *args: Any) -> T:
    """Run `entrypoint(*args)` on `nproc` ranks of this machine and return rank 0's result.

    Through torch's elastic launcher (what torchrun runs), the ranks meeting on 127.0.0.1 at a
    free port, none restarted. Each rank is a fresh interpreter with torchrun's environment,
    so `entrypoint` must be a module-level function and `args` picklable.

    Raises:
        TrainingError: a rank failed; one line with the first failure's error (its cause holds
            the ranks' tracebacks).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex, rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1", max_restarts=0)
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)  # the agent logs each failure's traceback; the error below carries them
    try:
        return elastic_launch(config, entrypoint)(*args)[0]
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        message = failure.message["message"] if isinstance(failure.message, dict) else failure.message
        line = next((text for text in message.splitlines() if text.strip()), f"exit code {failure.exitcode}")
        raise TrainingError(f"rank {rank} of {nproc} failed: {line.strip()}") from error
    finally:
        logging.disable(previous)
