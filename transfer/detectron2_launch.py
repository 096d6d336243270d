"""detectron2's ``launch`` on GPUs, and its counterpart for a machine without CUDA (gloo), which
the drivers' multi-process tests run on CPUs."""
from __future__ import annotations

from typing import Any

import torch

# isort: off
import transfer.compat  # noqa: F401  (shims; before any detectron2 import)
# isort: on

from detectron2.engine import launch
from detectron2.utils import comm


def launch_any(main_func: Any, num_gpus_per_machine: int, num_machines: int = 1,
               machine_rank: int = 0, dist_url: str = "auto", args: tuple = ()) -> None:
    """detectron2's ``launch`` where CUDA is available, else :func:`launch_cpu`."""
    start = launch if torch.cuda.is_available() else launch_cpu
    start(main_func, num_gpus_per_machine, num_machines=num_machines, machine_rank=machine_rank,
          dist_url=dist_url, args=args)


def launch_cpu(main_func: Any, num_gpus_per_machine: int, num_machines: int = 1,
               machine_rank: int = 0, dist_url: str = "auto", args: tuple = ()) -> None:
    """detectron2's ``launch`` for a machine without CUDA (its own asserts CUDA and uses NCCL):
    ``num_gpus_per_machine`` processes joined with gloo, each ``main_func(*args)``."""
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url == "auto":
        from detectron2.engine.launch import _find_free_port

        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    torch.multiprocessing.start_processes(
        _cpu_worker, nprocs=num_gpus_per_machine, start_method="spawn", daemon=False,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args))


def _cpu_worker(local_rank: int, main_func: Any, world_size: int, num_gpus_per_machine: int,
                machine_rank: int, dist_url: str, args: tuple) -> None:
    """detectron2's ``_distributed_worker`` with gloo and no device: the process group, the
    machine's local group, and DDP without ``device_ids`` (torch refuses them for CPU modules)."""
    import torch.distributed as dist
    from detectron2.engine import defaults

    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size,
                            rank=machine_rank * num_gpus_per_machine + local_rank)
    for machine in range(world_size // num_gpus_per_machine):
        group = dist.new_group(list(range(machine * num_gpus_per_machine,
                                          (machine + 1) * num_gpus_per_machine)))
        if machine == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    create_ddp_model = defaults.create_ddp_model
    defaults.create_ddp_model = lambda model, **kwargs: create_ddp_model(
        model, **{**kwargs, "device_ids": None})
    comm.synchronize()
    main_func(*args)
