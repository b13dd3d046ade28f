"""Multi-process training with global-batch mining on ``torch.distributed``.

Layer: above the losses (it wraps them), below training. Without an initialised process group
(or with one process) every function here is the identity and :class:`DistributedLoss` is the
wrapped loss, so the same code runs with and without ``torchrun``.

What is computed (W processes, rank r holds a local batch x_r of B_r samples, N = Σ B_r):

* :func:`all_gather_with_grad` returns the global batch G = [x_0; …; x_{W−1}] on every rank.
  Its backward sums the incoming gradient over the ranks (one all-reduce of an [N, D] tensor)
  and returns rank r's rows: if rank k computes a loss L_k(G), the gradient reaching x_r is
  Σ_k ∂L_k/∂x_r, the exact gradient of Σ_k L_k. Local batch sizes may differ (they are
  gathered first: one tiny all-gather and one host sync per call).
* :class:`DistributedLoss` with ``anchors="global"`` (default): every rank computes the same
  L = loss(G, labels of G), the single-process loss on the concatenated batch. The embedding
  gradient on rank r is W·∂L/∂x_r (the sum over the W identical copies of L). DDP *averages*
  parameter gradients over the ranks, which divides by W: the parameters receive exactly
  (1/W)·Σ_r W·∂L/∂θ|_{via x_r} = ∂L/∂θ, the single-process gradient. Nothing to compensate.
* ``anchors="local"``: rank r computes L_r = ``loss(x_r, labels_r, ref_embeddings=G,
  ref_labels=labels of G, ref_offset=its first row in G)``, the batch-loss contract of
  :class:`~metrickit.losses._base.BatchLoss` (own sample excluded by global index): an [B_r, N]
  distance matrix instead of [N, N]. The DDP-averaged parameter gradient is exactly ∂/∂θ of
  (1/W)·Σ_r L_r,
  including the terms where x_r is another rank's reference. This is a *different objective*
  from L. With ``reduction="sum"``, triplet (every mining) and contrastive terms are split
  between the ranks without overlap, so Σ_r L_r is the global sum of L and the parameters get
  (1/W)·∂L_sum/∂θ. Means are taken per rank (over its own anchors' terms), the lifted-structure
  column sums N(j) run over local anchors only, and quadruplet averages are per rank.

pytorch-metric-learning's wrapper gathers the other ranks' embeddings *without* gradient and
multiplies the loss by W. For the global objective that gives the same parameter gradient
(only the own rows carry gradient, and ∂L/∂x_r is the same partial derivative); for
local-anchor losses it drops the gradient of every term in which x_r is another rank's
reference, which :func:`all_gather_with_grad` keeps.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._validation import check_choice, check_embeddings, check_labels, check_positive_int
from .losses._base import BatchLoss
from .samplers import PKSampler

ANCHORS = ("global", "local")


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0: the process that logs, checkpoints and writes reports."""
    return get_rank() == 0


def init_from_env(timeout: datetime.timedelta | None = None) -> bool:
    """Join the process group described by torchrun's environment variables.

    With ``WORLD_SIZE`` > 1 and no process group yet, initialise one from ``env://`` (``RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``): NCCL with the CUDA device ``LOCAL_RANK`` when CUDA is
    available, gloo otherwise. Returns :func:`is_distributed`.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        kwargs = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group(backend, init_method="env://", **kwargs)
    return is_distributed()


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def _gather_sizes(x: Tensor) -> list[int]:
    """Every rank's number of rows (one small all-gather and one host sync)."""
    size = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return torch.cat(sizes).tolist()


def _gather_padded(x: Tensor, sizes: list[int]) -> Tensor:
    """All-gather rows of possibly different counts: pad to the largest, gather, unpad."""
    x = x.contiguous()
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int], rank: int) -> Tensor:  # type: ignore[override]
        ctx.start, ctx.stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop], None, None


def all_gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """``(G, offset)``: the rows of ``x`` from every rank in rank order, and the index of this
    rank's first row in G. Gradients flow back to the rank that produced each row (summed over
    the ranks' losses, see the module docstring). Ranks may hold different numbers of rows."""
    if not is_distributed():
        return x, 0
    sizes = _gather_sizes(x)
    rank = dist.get_rank()
    return _AllGatherWithGrad.apply(x, sizes, rank), sum(sizes[:rank])


@torch.no_grad()
def all_gather(x: Tensor) -> Tensor:
    """The rows of ``x`` from every rank, in rank order, without gradient (labels, evaluation
    embeddings). Ranks may hold different numbers of rows."""
    if not is_distributed():
        return x
    return _gather_padded(x, _gather_sizes(x))


def all_reduce_mean_(tensors: Sequence[Tensor]) -> None:
    """Average tensors (e.g. gradients) over the ranks, in place."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world)


class DistributedLoss(nn.Module):
    """A batch loss over the global batch gathered from every process.

    Args:
        loss: any loss ``loss(embeddings, labels)`` for ``anchors="global"``; any
            :class:`~metrickit.losses._base.BatchLoss` for ``anchors="local"``.
        anchors: ``"global"`` (every rank computes the single-process loss of the concatenated
            batch: exact) or ``"local"`` (this rank's anchors against the global references:
            an [B_r, N] instead of [N, N] distance matrix, a different objective) ["global"].

    ``forward(embeddings, labels)`` takes this rank's [B_r, D] embeddings and [B_r] labels.
    Under DDP the averaged parameter gradient is exactly that of the single-process loss on the
    concatenated batch (``"global"``) or of the mean over ranks of the local losses
    (``"local"``); see :mod:`metrickit.distributed`. Without a process group it is ``loss``.
    Learnable parameters of ``loss`` (triplet-center centres) must be averaged over the ranks
    too: wrap them in DDP with the model, or call :func:`all_reduce_mean_` on their gradients.
    """

    def __init__(self, loss: nn.Module, anchors: str = "global") -> None:
        super().__init__()
        self.anchors = check_choice(anchors, "anchors", ANCHORS)
        if not isinstance(loss, nn.Module) or (
            self.anchors == "local" and not isinstance(loss, BatchLoss)
        ):
            want = "a BatchLoss of metrickit.losses" if self.anchors == "local" else "a loss module"
            raise TypeError(
                f"loss must be {want} for anchors={self.anchors!r}, got {type(loss).__name__}"
            )
        self.loss = loss

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if not is_distributed():
            return self.loss(embeddings, labels)
        check_embeddings(embeddings)
        check_labels(labels, embeddings.shape[0])
        gathered, offset = all_gather_with_grad(embeddings)
        all_labels = all_gather(labels)
        if self.anchors == "global":
            return self.loss(gathered, all_labels)
        return self.loss(
            embeddings, labels, ref_embeddings=gathered, ref_labels=all_labels, ref_offset=offset
        )


class DistributedPKSampler(PKSampler):
    """P×K batches for one rank: each global step draws one P·W-class batch from the
    :class:`~metrickit.samplers.PKSampler` stream (``p * world_size`` classes × ``k``) and
    rank r takes classes r·P … (r+1)·P − 1 of it.

    So the ranks hold disjoint classes, no sample appears twice within a global step (for
    classes with at least K samples), and the global batches are exactly those of a
    single-process ``PKSampler(labels, p * world_size, k, num_batches, seed)``; ``set_epoch``
    selects the epoch's stream on every rank alike.

    Args:
        labels, k, seed: as in :class:`~metrickit.samplers.PKSampler`.
        p: classes per batch *on each rank*.
        num_batches: steps per epoch; default ``len(labels) // (p * k * world_size)``, >= 1.
        rank, world_size: default from the process group (0 and 1 without one).
    """

    def __init__(
        self,
        labels: Sequence[object] | np.ndarray | Tensor,
        p: int,
        k: int,
        num_batches: int | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        world = get_world_size() if world_size is None else world_size
        check_positive_int(world, "world_size")
        rank = get_rank() if rank is None else rank
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
            raise ValueError(f"rank must be an integer in [0, {world}), got {rank!r}")
        check_positive_int(p, "p")
        check_positive_int(k, "k")
        classes = len(np.unique(np.asarray(labels)))
        if classes < p * world:
            raise ValueError(
                f"p={p} classes per rank × world_size={world} needs {p * world} distinct "
                f"classes per global step, but labels contain only {classes}"
            )
        if num_batches is None:
            num_batches = max(1, len(labels) // (p * k * world))
        super().__init__(labels, p * world, k, num_batches=num_batches, seed=seed)
        self.local_p, self.rank, self.world_size = p, rank, world

    @property
    def batch_size(self) -> int:
        return self.local_p * self.k

    def __iter__(self) -> Iterator[list[int]]:
        size = self.batch_size
        for batch in super().__iter__():
            yield batch[self.rank * size : (self.rank + 1) * size]
