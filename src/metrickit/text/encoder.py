"""Sentence encoder: a Hugging Face transformer, a pooling of its token embeddings, and an
optional L2 normalisation (the Sentence-BERT recipe of Reimers & Gurevych 2019, "Sentence-BERT:
Sentence Embeddings using Siamese BERT-Networks", EMNLP).

Loaded from a local directory only (``local_files_only=True``, and ``HF_HUB_OFFLINE`` is set
before ``transformers`` is imported): nothing is ever downloaded. ``save(dir)`` writes a
sentence-transformers directory, so ``SentenceTransformer(dir)`` loads it back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .._validation import check_bool, check_choice, check_positive_int
from .modeldir import (
    DEFAULT_MAX_SEQ_LENGTH,
    POOLING_MODES,
    read_layout,
    resolve_model_dir,
    write_st_files,
)


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "metrickit.text needs the 'text' extra: pip install 'metrickit[text]'"
        ) from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def pool(token_embeddings: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Sentence embeddings [B, D] from token embeddings [B, T, D] and the attention mask [B, T].

    ``mean``: average over the unmasked tokens; ``cls``: the first token; ``max``: the
    element-wise maximum over the unmasked tokens.
    """
    if mode == "cls":
        return token_embeddings[:, 0]
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    if mode == "max":
        masked = token_embeddings.masked_fill(mask == 0, torch.finfo(token_embeddings.dtype).min)
        return masked.max(dim=1).values
    summed = (token_embeddings * mask).sum(dim=1)
    return summed / mask.sum(dim=1).clamp_min(1e-9)


class SentenceEncoder(nn.Module):
    """Texts → embeddings. ``forward`` takes tokenizer features (use :meth:`tokenize`);
    :meth:`encode` takes a list of strings and works in batches without gradients."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: object,
        pooling: str = "mean",
        normalize: bool = True,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = check_choice(pooling, "pooling", POOLING_MODES)
        self.normalize = check_bool(normalize, "normalize")
        self.max_seq_length = check_positive_int(max_seq_length, "max_seq_length")

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_seq_length: int | None = None,
    ) -> SentenceEncoder:
        """Load a built-in model (``all-minilm-l6-v2``), an ST directory or a Hugging Face one.

        Arguments left as None come from the directory (ST modules and ``sentence_bert_config``);
        a plain Hugging Face directory defaults to mean pooling, normalised, 256 tokens at most;
        an ST directory without ``max_seq_length`` (ST 6) takes the tokenizer's maximum.
        """
        directory = resolve_model_dir(name_or_path)
        layout = read_layout(directory)
        tf = _transformers()
        model = tf.AutoModel.from_pretrained(layout.transformer_dir, local_files_only=True)
        tokenizer = tf.AutoTokenizer.from_pretrained(layout.transformer_dir, local_files_only=True)
        is_st = (directory / "modules.json").is_file()
        if max_seq_length is None:
            max_seq_length = layout.max_seq_length or DEFAULT_MAX_SEQ_LENGTH
            if is_st and layout.max_seq_length is None:  # ST 6 keeps it in the tokenizer
                max_seq_length = min(int(tokenizer.model_max_length), 1 << 20)
        return cls(
            model,
            tokenizer,
            pooling=layout.pooling if pooling is None else pooling,
            normalize=(layout.normalize if is_st else True) if normalize is None else normalize,
            max_seq_length=max_seq_length,
        )

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Padded, truncated tokenizer features on the model's device."""
        features = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_seq_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in features.items()}

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        out = self.model(**features, return_dict=True)
        emb = pool(out.last_hidden_state, features["attention_mask"], self.pooling)
        return nn.functional.normalize(emb, dim=-1) if self.normalize else emb

    def embed(self, texts: Sequence[str]) -> Tensor:
        """Embeddings of ``texts`` in one batch, with autograd (training)."""
        return self(self.tokenize(texts))

    @torch.no_grad()
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
    ) -> np.ndarray | Tensor:
        """Embeddings [N, D] of ``texts`` in eval mode, ``batch_size`` texts at a time.

        Texts are processed longest first (less padding) and returned in the input order.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, got one string")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must all be strings")
        batch_size = check_positive_int(batch_size, "batch_size")
        order = np.argsort([-len(t) for t in texts], kind="stable")
        was_training = self.training
        self.eval()
        chunks = []
        try:
            from tqdm.auto import tqdm

            starts = range(0, len(texts), batch_size)
            for start in tqdm(starts, desc="encode", disable=not show_progress_bar):
                chunk = [texts[i] for i in order[start : start + batch_size]]
                chunks.append(self.embed(chunk).float().cpu())
        finally:
            self.train(was_training)
        out = torch.zeros(len(texts), self.dimension)
        if chunks:
            out[torch.as_tensor(order)] = torch.cat(chunks)
        return out.numpy() if convert_to_numpy else out

    def save(self, directory: str | Path) -> Path:
        """Write a sentence-transformers model directory (safetensors weights, tokenizer, ST
        modules). ``directory`` must be absent or empty; it appears complete or not at all."""
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise FileExistsError(f"cannot save the model: {str(directory)!r} is not empty")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            write_st_files(tmp, self.pooling, self.normalize, self.dimension, self.max_seq_length)
            if directory.exists():
                directory.rmdir()
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory
