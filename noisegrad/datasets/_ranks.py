"""The processes of a data-set run: which rank this is, how many there are, and the few collective steps needed.

Under ``torchrun`` the process group is PyTorch's own (``torch.distributed``): one already initialised by the
user is used as it is; otherwise, when ``WORLD_SIZE`` > 1, it is initialised here from torchrun's environment
(NCCL for a CUDA model, gloo otherwise) and destroyed at the end. A single process needs no process group.

Examples
--------
>>> ranks = Ranks(rank=0, world=1)
>>> ranks.gather("mine"), ranks.share_from_0(3), my_share(list(range(10)), 1, 3)
(['mine'], 3, [1, 4, 7])
"""

import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Sequence, TypeVar

import torch
import torch.distributed as dist

__all__ = ["Ranks", "join", "my_share", "local_device"]

T = TypeVar("T")

#: How long a rank waits for the others at a collective step: a rank can be a whole shard behind the others.
TIMEOUT = datetime.timedelta(hours=2)


@dataclass
class Ranks:
    """This process's rank among ``world`` processes, and whether it created the process group."""

    rank: int
    world: int
    owns_group: bool = False

    def gather(self, value: T) -> List[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        gathered: List[Any] = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def share_from_0(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


def join(device: torch.device) -> Ranks:
    """The run's ranks: the user's process group, one made from torchrun's environment, or one process alone."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(0, 1)
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world} asks for several processes, but this torch build has no "
                           "torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=TIMEOUT)  # torchrun's MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    return Ranks(dist.get_rank(), dist.get_world_size(), owns_group=True)


def my_share(items: Sequence[T], rank: int, world: int) -> List[T]:
    """Rank ``rank``'s items: every ``world``-th, starting at its own; together the ranks cover each item once."""
    return list(items[rank::world])


def local_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` (torchrun's local rank, 0 alone) if CUDA is available, else CPU.

    Examples
    --------
    >>> local_device().type in ("cuda", "cpu")
    True
    """
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")
