"""A tiny randomly initialised BERT and word-level tokenizer for fast, offline text tests."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

WORDS = (
    "a the man woman dog cat plane car is are was playing running eating taking off on in "
    "guitar piano flute pizza cheese air big small red blue and with of to he she said hi"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )


def tiny_bert(seed: int = 0, dropout: float = 0.0):
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    return BertModel(config).eval()


def tiny_model_dir(path: Path, seed: int = 0) -> Path:
    """A plain Hugging Face model directory (config, safetensors weights, tokenizer)."""
    path.mkdir(parents=True, exist_ok=True)
    tiny_bert(seed).save_pretrained(path, safe_serialization=True)
    tiny_tokenizer().save_pretrained(path)
    return path


def installed(distribution: str) -> bool:
    """Whether a distribution (a data carrier, sentence-transformers) is installed."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
