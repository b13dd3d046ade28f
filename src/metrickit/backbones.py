"""Pretrained or user-defined backbones with an embedding head.

A backbone is named by a spec:

* ``"torchvision:resnet50"``: ``torchvision.models.get_model(name, weights=None)`` with its
  classifier (the last ``nn.Linear``) replaced by the identity;
* ``"timm:convnext_tiny"``: ``timm.create_model(name, pretrained=False)``, its classifier (the
  last ``nn.Linear``) likewise replaced by the identity;
* ``"package.module:factory"``: any importable callable returning an ``nn.Module`` whose output
  (flattened) are the features; a factory with an ``in_channels`` parameter gets the input's
  channel count.

Weights come from a local file only, never the network: ``.safetensors`` (safetensors), or a
``torch.save`` file read with ``weights_only=True`` (a file carrying other pickled objects is
refused). They are loaded into the backbone as built (with its classifier, so the checkpoints
torchvision and timm publish load unchanged) before the classifier is removed.

    >>> model = build_backbone("torchvision:resnet50", (3, 224, 224), embedding_dim=128,
    ...                        normalize=True, weights="resnet50.safetensors")
    >>> model.freeze_backbone(True)     # train the head only (e.g. for the first epochs)
"""

from __future__ import annotations

import importlib
import inspect
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ._validation import check_bool, check_positive_int
from .models import L2Normalize, build_model

_LIBRARIES = {"torchvision": "torchvision", "timm": "timm"}


class BackboneEmbedder(nn.Module):
    """``backbone`` → flatten → ``Linear(feature_dim, embedding_dim)`` [→ L2 normalisation].

    While :meth:`freeze_backbone` is on, the backbone's parameters get no gradient and its
    batch-norm statistics stay fixed (the backbone stays in eval mode); only the head trains.
    """

    def __init__(
        self, backbone: nn.Module, feature_dim: int, embedding_dim: int, normalize: bool = False
    ) -> None:
        super().__init__()
        check_positive_int(feature_dim, "feature_dim")
        check_positive_int(embedding_dim, "embedding_dim")
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, embedding_dim)
        self.normalize = L2Normalize() if check_bool(normalize, "normalize") else nn.Identity()
        self.frozen = False

    def forward(self, x: Tensor) -> Tensor:
        return self.normalize(self.head(self.backbone(x).flatten(1)))

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (``True``) or resume (``False``) training the backbone."""
        self.frozen = check_bool(frozen, "frozen")
        for p in self.backbone.parameters():
            p.requires_grad_(not self.frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> BackboneEmbedder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a state dict from a local ``.safetensors`` or ``torch.save`` file into ``module``.

    A ``torch.save`` file may hold the state dict itself or a mapping with it under
    ``"state_dict"`` or ``"model"``. Keys must match exactly.
    """
    state = read_state_dict(path)
    result = module.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        raise ValueError(
            f"weights {str(path)!r} do not fit the backbone: {', '.join(parts)} parameter names"
        )


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file; pickled objects other than tensors are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "reading .safetensors weights needs the safetensors package: "
                "pip install safetensors"
            ) from None
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"cannot read weights {str(path)!r}: {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"weights {str(path)!r} cannot be loaded safely (weights_only=True): {first}"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights {str(path)!r} hold no state dict of tensors")
    return dict(state)


def _import_library(name: str) -> object:
    try:
        return importlib.import_module(_LIBRARIES[name])
    except (ImportError, RuntimeError) as exc:
        raise ModuleNotFoundError(
            f"backbone '{name}:...' needs the {name} package built for your torch "
            f"(pip install {name}); importing it failed: {str(exc).splitlines()[0]}"
        ) from None


def _strip_classifier(model: nn.Module) -> nn.Module:
    """Replace the last ``nn.Linear`` (the classifier of torchvision models) by the identity."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        *parents, leaf = linears[-1].split(".")
        owner = model.get_submodule(".".join(parents)) if parents else model
        setattr(owner, leaf, nn.Identity())
    return model


def _factory(spec: str) -> object:
    module_name, _, attr = spec.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"model {spec!r}: cannot import module {module_name!r} ({exc}); a backbone spec is "
            "torchvision:NAME, timm:NAME or package.module:factory"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model {spec!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model {spec!r}: {attr!r} is not callable")
    return obj


def build_raw_backbone(
    spec: str, input_shape: Sequence[int], weights: str | Path | None = None
) -> nn.Module:
    """The backbone of ``spec`` with ``weights`` loaded and any classifier removed."""
    library, sep, name = spec.partition(":")
    if not sep or not library or not name:
        raise ValueError(
            f"model {spec!r} is not a backbone spec: use torchvision:NAME, timm:NAME or "
            "package.module:factory"
        )
    if library == "torchvision":
        model = _import_library(library).models.get_model(name, weights=None)  # type: ignore[attr-defined]
    elif library == "timm":
        model = _import_library(library).create_model(name, pretrained=False)  # type: ignore[attr-defined]
    else:
        factory = _factory(spec)
        kwargs = {}
        if "in_channels" in _parameters(factory) and len(input_shape) == 3:
            kwargs["in_channels"] = int(input_shape[0])
        model = factory(**kwargs)  # type: ignore[operator]
        if not isinstance(model, nn.Module):
            raise ValueError(f"model {spec!r} returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        load_weights(model, weights)
    if library in _LIBRARIES:
        model = _strip_classifier(model)
    return model


def _parameters(factory: object) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(factory).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return {}


def feature_dim(backbone: nn.Module, input_shape: Sequence[int]) -> int:
    """The flattened output size of ``backbone`` for one input of ``input_shape`` (one forward)."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            param = next(backbone.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            out = backbone(torch.zeros(1, *input_shape, device=device))
    except Exception as exc:
        raise ValueError(
            f"the backbone does not accept inputs of shape {tuple(input_shape)}: {exc}"
        ) from None
    finally:
        backbone.train(was_training)
    if not isinstance(out, Tensor):
        raise ValueError(f"the backbone must return a tensor, got {type(out).__name__}")
    return int(out[0].numel())


def build_backbone(
    spec: str,
    input_shape: Sequence[int],
    embedding_dim: int = 64,
    normalize: bool = False,
    weights: str | Path | None = None,
) -> BackboneEmbedder:
    """A :class:`BackboneEmbedder`: the backbone of ``spec`` (with ``weights``) and a new head."""
    check_positive_int(embedding_dim, "embedding_dim")
    backbone = build_raw_backbone(spec, input_shape, weights)
    return BackboneEmbedder(backbone, feature_dim(backbone, input_shape), embedding_dim, normalize)


def build_embedder(
    model: str,
    input_shape: Sequence[int],
    embedding_dim: int = 64,
    normalize: bool = False,
    weights: str | Path | None = None,
) -> nn.Module:
    """A built-in network by name (``mlp``, ``cnn``; see :func:`~metrickit.models.build_model`)
    or, for a spec with a colon, :func:`build_backbone`. ``weights`` needs a backbone spec."""
    if ":" in model:
        return build_backbone(model, input_shape, embedding_dim, normalize, weights)
    if weights is not None:
        raise ValueError(
            f"weights apply to backbone specs (torchvision:NAME, timm:NAME, module:factory), "
            f"not to the built-in model {model!r}"
        )
    return build_model(model, input_shape, embedding_dim=embedding_dim, normalize=normalize)
