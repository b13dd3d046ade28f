"""Embedding networks: an MLP, a small CNN, and siamese/triplet wrappers around one shared embedder.

Normalisation is explicit: the losses never L2-normalise embeddings behind the user's back. Pass
``normalize=True`` here (or put an :class:`L2Normalize` layer in your own model) to train on the
unit hypersphere, as cosine-based setups and FaceNet do.

    >>> model = build_model("cnn", input_shape=(1, 28, 28), embedding_dim=64, normalize=True)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_positive_int

_NORM_EPS = 1e-12


class L2Normalize(nn.Module):
    """Scale every row (last dimension) to unit Euclidean norm; zero rows stay zero."""

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2, dim=-1, eps=_NORM_EPS)


def _head(normalize: bool) -> list[nn.Module]:
    return [L2Normalize()] if normalize else []


class MLPEmbedder(nn.Sequential):
    """Flatten → [Linear → ReLU → Dropout] per hidden width → Linear(embedding_dim) [→ L2Normalize].

    Args:
        in_features: number of input features after flattening (e.g. 64 for 8×8 images).
        embedding_dim: output size (default 64).
        hidden: widths of the hidden layers (default one layer of 256; ``()`` for a linear map).
        normalize: end with :class:`L2Normalize` (default False).
        dropout: dropout probability after each hidden layer (default 0).
    """

    def __init__(
        self,
        in_features: int,
        embedding_dim: int = 64,
        hidden: Sequence[int] = (256,),
        normalize: bool = False,
        dropout: float = 0.0,
    ) -> None:
        check_positive_int(in_features, "in_features")
        check_positive_int(embedding_dim, "embedding_dim")
        for width in hidden:
            check_positive_int(width, "hidden width")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = in_features
        for width in hidden:
            layers += [nn.Linear(width_in, width), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, embedding_dim))
        super().__init__(*layers, *_head(normalize))


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    check_positive_int(h, "image height")
    check_positive_int(w, "image width")
    return h, w


class ConvEmbedder(nn.Module):
    """A small, fast CNN: three conv blocks (3×3 conv → BatchNorm → ReLU, widths 16/32/64), a 2×2
    max-pool after each of the first two blocks while the feature map is at least 4 pixels on that
    side (so 28×28 → 7×7 and 8×8 → 2×2), adaptive average pooling to 2×2, then
    Linear(256, 128) → ReLU → Linear(128, embedding_dim) [→ L2Normalize]. ≈ 65k parameters.

    Args:
        in_channels: 1 for greyscale, 3 for RGB (default 1).
        image_size: side of square images, or (height, width) (default 28).
        embedding_dim: output size (default 64).
        normalize: end with :class:`L2Normalize` (default False).
    """

    widths = (16, 32, 64)

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 28,
        embedding_dim: int = 64,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(embedding_dim, "embedding_dim")
        h, w = _pair(image_size)
        self.in_channels, self.image_size = in_channels, (h, w)
        blocks: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(self.widths):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            blocks.append(nn.ReLU(inplace=True))
            pool = (2 if h >= 4 else 1, 2 if w >= 4 else 1)
            if i < 2 and pool != (1, 1):
                blocks.append(nn.MaxPool2d(pool))
                h, w = h // pool[0], w // pool[1]
            c_in = c_out
        blocks += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Linear(c_in * 4, 128), nn.ReLU(inplace=True), nn.Linear(128, embedding_dim)
        )
        self.normalize = L2Normalize() if normalize else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ConvEmbedder expects images [B, {self.in_channels}, H, W], "
                f"got shape {tuple(x.shape)}"
            )
        return self.normalize(self.head(self.features(x)))


class _BasicBlock(nn.Module):
    """Two 3×3 conv → BatchNorm layers with an identity (or 1×1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class SmallResNet(nn.Sequential):
    """A small residual network (He et al. 2016, "Deep Residual Learning for Image Recognition"):
    a 3×3 stem of 16 channels, then basic blocks of widths ``widths`` (stride 2 from the second
    on), global average pooling; outputs ``widths[-1]`` features per image, no classifier.

    A backbone for ``--model metrickit.models:small_resnet`` and for tests of the backbone path.
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64)) -> None:
        check_positive_int(in_channels, "in_channels")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        ]
        c_in = 16
        for i, width in enumerate(widths):
            layers.append(_BasicBlock(c_in, check_positive_int(width, "width"), 1 if i == 0 else 2))
            c_in = width
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def small_resnet(in_channels: int = 3) -> SmallResNet:
    """:class:`SmallResNet` with the default widths (16, 32, 64): 77k parameters (RGB)."""
    return SmallResNet(in_channels)


class _SharedEmbedder(nn.Module):
    def __init__(self, embedder: nn.Module, normalize: bool = False) -> None:
        super().__init__()
        if not isinstance(embedder, nn.Module):
            raise TypeError(f"embedder must be a torch.nn.Module, got {type(embedder).__name__}")
        self.embedder = embedder
        self.normalize = L2Normalize() if normalize else nn.Identity()

    def embed(self, x: Tensor) -> Tensor:
        """The embedding of one batch through the shared embedder."""
        return self.normalize(self.embedder(x))


class SiameseNetwork(_SharedEmbedder):
    """Two inputs through ONE embedder (weights shared by construction): ``(e1, e2)``.

    Bromley et al. 1993, "Signature Verification using a Siamese Time Delay Neural Network";
    trained with the contrastive loss (Hadsell, Chopra & LeCun 2006). ``normalize=True`` adds
    L2 normalisation of the outputs (default False).
    """

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        return self.embed(x1), self.embed(x2)


class TripletNetwork(_SharedEmbedder):
    """Anchor, positive and negative through ONE embedder: ``(ea, ep, en)``.

    Hoffer & Ailon 2015, "Deep Metric Learning Using Triplet Network"; trained with the triplet
    loss. ``normalize=True`` adds L2 normalisation of the outputs (default False).
    """

    def forward(self, a: Tensor, p: Tensor, n: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.embed(a), self.embed(p), self.embed(n)


def _build_mlp(input_shape: tuple[int, ...], embedding_dim: int, normalize: bool, **kw):
    return MLPEmbedder(math.prod(input_shape), embedding_dim, normalize=normalize, **kw)


def _build_cnn(input_shape: tuple[int, ...], embedding_dim: int, normalize: bool, **kw):
    if len(input_shape) != 3:
        raise ValueError(
            f"model 'cnn' needs an image input_shape (C, H, W), got {input_shape}; "
            "use 'mlp' for feature vectors"
        )
    c, h, w = input_shape
    return ConvEmbedder(c, (h, w), embedding_dim, normalize=normalize, **kw)


_MODELS = {"mlp": _build_mlp, "cnn": _build_cnn}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_MODELS)


def build_model(
    name: str,
    input_shape: Sequence[int],
    embedding_dim: int = 64,
    normalize: bool = False,
    **kwargs: object,
) -> nn.Module:
    """An embedder by name for inputs of one sample's shape (without the batch dimension).

    ``"mlp"``: :class:`MLPEmbedder` on the flattened input (any shape; extra kwargs ``hidden``,
    ``dropout``). ``"cnn"``: :class:`ConvEmbedder`, needs ``input_shape = (C, H, W)``.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    try:
        shape = tuple(operator.index(s) for s in input_shape)
    except TypeError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(
            f"input_shape must be a non-empty tuple of positive ints, got {input_shape}"
        )
    return _MODELS[name](shape, embedding_dim, normalize, **kwargs)
