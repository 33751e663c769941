"""Which share of a batch this process runs: all of it, or its rank's share under ``accelerate launch``.

A plain run never touches torch.distributed (nor imports torch or accelerate): only when a
launcher has set a world size above one is :class:`accelerate.PartialState` created, which
joins the process group (gloo on CPU, NCCL on GPUs) and picks this process's device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: Variables through which launchers (torchrun / accelerate, MPI) announce the number of processes.
WORLD_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size() -> int:
    for name in WORLD_VARS:
        value = os.environ.get(name)
        if value:
            try:
                return max(int(value), 1)
            except ValueError:
                continue
    return 1


@dataclass
class Shard:
    """This process's place: ``rank`` of ``world``; ``state`` is accelerate's ``PartialState`` when distributed."""

    rank: int = 0
    world: int = 1
    state: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.state is not None and self.world > 1

    def device(self, requested: str | None) -> str | None:
        """This process's own device when distributed (``cuda`` or none given -> ``cuda:<local rank>``)."""
        if not self.distributed:
            return requested
        own = "cpu" if self.state.device.type == "cpu" else str(self.state.device)
        if requested is None or requested == own.split(":")[0]:
            return own
        return requested

    def take(self, items: list[T]) -> list[T]:
        """This rank's share: every ``world``-th item from ``rank`` (disjoint; all ranks together: complete)."""
        return items[self.rank::self.world]

    def barrier(self) -> None:
        if self.distributed:
            self.state.wait_for_everyone()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if not self.distributed:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]


def current() -> Shard:
    """The shard of this process (joins the process group on first use when launched distributed)."""
    if launched_world_size() <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    # PartialState (unlike Accelerator) does not read ACCELERATE_USE_CPU itself: without ``cpu``
    # it would find no GPU backend and silently run every process on everything.
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes <= 1:
        from diffcompose.errors import InputError

        raise InputError(f"launched with a world size of {launched_world_size()} but accelerate set up "
                         f"{state.num_processes} process ({state.distributed_type})")
    return Shard(state.process_index, state.num_processes, state)
