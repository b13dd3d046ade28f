"""Gradient caching for batch losses of text embeddings (GradCache).

L. Gao, Y. Zhang, J. Han & J. Callan, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup", RepL4NLP 2021. A loss that couples the whole batch (in-batch negatives, CoSENT)
needs every embedding at once, but not every activation: the encoder's graph is only needed per
text. So:

1. embed the batch in chunks of ``mini_batch_size`` texts without a graph (saving the random
   number generator state before each chunk);
2. compute the loss on those embeddings as leaves and its gradient with respect to them;
3. re-run each chunk with a graph, with its RNG state restored (same dropout masks), and
   backpropagate the cached embedding gradients through it.

The parameter gradients are exactly those of the loss on embeddings computed with the same
chunking and dropout masks; peak activation memory is that of one chunk, not of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._validation import check_positive_int
from ..training.precision import MixedPrecision

_HALF = (torch.float16, torch.bfloat16)


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def as_float32(embeddings: Tensor) -> Tensor:
    """Half-precision embeddings (from autocast) in float32, for the loss; others unchanged."""
    return embeddings.float() if embeddings.dtype in _HALF else embeddings


def _chunks(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def cached_backward(
    encoder,
    columns: Sequence[Sequence[str]],
    loss_fn: Callable[[list[Tensor], Tensor | None], Tensor],
    scores: Tensor | None = None,
    mini_batch_size: int = 32,
    amp: MixedPrecision | None = None,
) -> Tensor:
    """Accumulate into ``encoder``'s parameter gradients the gradient of
    ``loss_fn([embeddings of each column], scores)``, ``mini_batch_size`` texts at a time;
    return the (detached) loss.

    ``encoder`` is a :class:`~metrickit.text.SentenceEncoder` (anything with ``embed(texts)``
    and ``device``). ``amp``: the encoder runs under its precision and the loss is
    backpropagated through its loss scaling (fp16); None: float32.
    """
    size = check_positive_int(mini_batch_size, "mini_batch_size")
    device = encoder.device
    amp = amp or MixedPrecision("32", device)
    states: list[list[tuple[Tensor, Tensor | None]]] = []
    leaves: list[Tensor] = []
    for column in columns:
        parts, column_states = [], []
        for chunk in _chunks(column, size):
            column_states.append(_rng_state(device))
            with torch.no_grad(), amp.autocast():
                parts.append(as_float32(encoder.embed(chunk)))
        states.append(column_states)
        leaves.append(torch.cat(parts).requires_grad_(True))
    after = _rng_state(device)
    loss = loss_fn(leaves, scores)
    amp.backward(loss)
    for column, leaf, column_states in zip(columns, leaves, states, strict=True):
        if leaf.grad is None:
            continue
        for chunk, state, grad in zip(
            _chunks(column, size), column_states, leaf.grad.split(size), strict=True
        ):
            _set_rng_state(state, device)
            with amp.autocast():
                embeddings = as_float32(encoder.embed(chunk))
            embeddings.backward(grad)
    _set_rng_state(after, device)
    return loss.detach()
