"""Several processes through accelerate (torch.distributed): which device family a launch runs on.

accelerate's ``PartialState`` treats a multi-process launch on a machine without a GPU as "not distributed" unless it
is told to use the CPU — and then every process would work alone, writing the same files. kakusan tells it: a launch
with several processes (``torchrun --nproc_per_node N``, ``accelerate launch --multi_gpu``, MPI) on a machine
without CUDA, or with ``ACCELERATE_USE_CPU`` set (``accelerate launch --cpu``), runs on the CPU with the gloo backend.
"""
from __future__ import annotations

import atexit
import os


def use_cpu() -> bool:
    import torch

    flag = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return flag or not torch.cuda.is_available()


def process_state():
    """accelerate's ``PartialState`` (rank, number of processes, barriers) on the right device family."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())


def _destroy_process_group() -> None:
    """At exit, take the process group down (gloo's threads otherwise abort the interpreter's exit now and then)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except (RuntimeError, ValueError):  # exiting anyway
        pass


atexit.register(_destroy_process_group)
