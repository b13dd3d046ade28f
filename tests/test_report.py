import base64
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from metrickit import plots
from metrickit.report import best_columns, format_metrics_table, lower_is_better, write_report

METRICS = {
    "trained": {"recall@1": 0.91234, "mAP": 0.5, "loss": 0.12},
    "untrained": {"recall@1": 0.4, "mAP": 0.2, "loss": 0.95},
    "raw input": {"recall@1": 0.55, "NMI": 0.3},
}


class Collect(HTMLParser):
    """Tags with their attributes, and the text of every table cell."""

    def __init__(self):
        super().__init__()
        self.tags, self.cells, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("td", "th"):
            self._cell = [dict(attrs).get("class", ""), ""]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


@pytest.fixture
def pngs(tmp_path):
    a = plots.plot_curves({"loss": [3, 2, 1]}, tmp_path / "img" / "curves.png")
    b = plots.plot_loss_vs_distance("contrastive", tmp_path / "img" / "lvd.png")
    return a, b


def parse(path):
    text = path.read_text(encoding="utf-8")
    p = Collect()
    p.feed(text)
    return text, p


def test_report_is_self_contained_and_escaped(tmp_path, pngs):
    config = {
        "loss": "<script>alert(1)</script>",
        "model": {"dim": 64, "name": 'a "b" & c'},
        "lr": 1e-3,
    }
    out = write_report(
        tmp_path / "run",
        title="Run <1>",
        config=config,
        metrics=METRICS,
        images=[(pngs[0], "curves <loss> & more"), pngs[1]],
        notes="note with <b>tags</b>\nsecond line",
    )
    assert out == tmp_path / "run" / "report.html"
    text, p = parse(out)
    # no scripts, no external resources of any kind
    assert "<script" not in text.lower() and "http://" not in text and "https://" not in text
    assert all(tag not in ("script", "link", "iframe") for tag, _ in p.tags)
    srcs = [attrs["src"] for tag, attrs in p.tags if "src" in attrs]
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert base64.b64decode(srcs[0].split(",", 1)[1]) == pngs[0].read_bytes()
    assert all("href" not in attrs for _, attrs in p.tags)
    # every string escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Run &lt;1&gt;" in text and "curves &lt;loss&gt; &amp; more" in text
    assert "&lt;b&gt;tags&lt;/b&gt;" in text and "<b>" not in text
    cells = [c for _, c in p.cells]
    assert "model.dim" in cells and "64" in cells and 'a "b" & c' in cells
    # the default caption is the file name
    assert "lvd" in [attrs.get("alt") for tag, attrs in p.tags if tag == "img"]


def test_report_contains_every_metric_and_highlights_the_best(tmp_path):
    out = write_report(tmp_path, title="t", config={}, metrics=METRICS, images=[])
    _, p = parse(out)
    cells = [c for _, c in p.cells]
    for column, values in METRICS.items():
        assert column in cells
        for name, value in values.items():
            assert name in cells and f"{value:.4f}" in cells
    assert cells.count("-") == 4  # raw input lacks mAP and loss, the others lack NMI
    best = sorted(text for cls, text in p.cells if "best" in cls)
    # higher recall/mAP wins, lower loss wins; a row with one value has no winner
    assert best == sorted(["0.9123", "0.5000", "0.1200"])


def test_best_columns_rules():
    assert best_columns(METRICS, "recall@1") == {"trained"}
    assert best_columns(METRICS, "loss") == {"trained"}
    assert best_columns(METRICS, "NMI") == set()
    tie = {"a": {"x": 0.5}, "b": {"x": 0.5}}
    assert best_columns(tie, "x") == set()
    two_best = {"a": {"x": 0.7}, "b": {"x": 0.7}, "c": {"x": 0.1}}
    assert best_columns(two_best, "x") == {"a", "b"}
    nan = {"a": {"x": float("nan")}, "b": {"x": 0.1}, "c": {"x": 0.2}}
    assert best_columns(nan, "x") == {"c"}
    for name in ("loss", "train_loss", "error_rate", "mean_rank", "epoch_time"):
        assert lower_is_better(name)
    for name in ("recall@1", "mAP@R", "NMI", "precision@10", "AUC", "MRR", "NDCG@10"):
        assert not lower_is_better(name)


def test_report_errors_and_empty_sections(tmp_path, pngs):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_report(tmp_path, title="t", config={}, metrics={}, images=[tmp_path / "missing.png"])
    fake = tmp_path / "fake.png"
    fake.write_text("not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        write_report(tmp_path, title="t", config={}, metrics={}, images=[fake])
    assert not (tmp_path / "report.html").exists()
    text, _ = parse(write_report(tmp_path, title="t", config={}, metrics={}, images=[]))
    assert "(no metrics)" in text and "(no figures)" in text and "(empty)" in text


def test_metrics_table_text():
    table = format_metrics_table(METRICS)
    assert table == "\n".join(
        [
            "metric    trained  untrained  raw input",
            "--------  -------  ---------  ---------",
            "recall@1   0.9123     0.4000     0.5500",
            "mAP        0.5000     0.2000          -",
            "loss       0.1200     0.9500          -",
            "NMI             -          -     0.3000",
        ]
    )


def test_metrics_table_value_types():
    table = format_metrics_table(
        {"run": {"queries": 1000, "auc": np.float32(0.25), "nan": float("nan"), "tag": "x"}}
    )
    lines = table.splitlines()
    assert re.fullmatch(r"queries +1000", lines[2])
    assert re.fullmatch(r"auc +0\.2500", lines[3])
    assert re.fullmatch(r"nan +nan", lines[4])
    assert re.fullmatch(r"tag +x", lines[5])
    # columns aligned: every value ends in the same column
    assert len({len(line) for line in lines[2:]}) == 1
    assert format_metrics_table({}) == "metric\n------"


def test_eer_and_error_rates_are_lower_is_better_and_thresholds_are_not_scores():
    from metrickit.report import best_columns, is_score, lower_is_better

    cols = {
        "raw input": {"eer": 0.33, "verification_threshold": 8.07, "tar_at_far_1e-3": 0.06,
                      "num_queries": 1000, "error_rate": 0.2},
        "untrained": {"eer": 0.39, "verification_threshold": 0.02, "tar_at_far_1e-3": 0.04,
                      "num_queries": 1000, "error_rate": 0.3},
        "trained": {"eer": 0.02, "verification_threshold": 0.76, "tar_at_far_1e-3": 0.83,
                    "num_queries": 999, "error_rate": 0.1},
    }  # fmt: skip
    assert best_columns(cols, "eer") == {"trained"}
    assert best_columns(cols, "error_rate") == {"trained"}
    assert best_columns(cols, "tar_at_far_1e-3") == {"trained"}  # a TAR, higher is better
    assert best_columns(cols, "verification_threshold") == set()
    assert best_columns(cols, "num_queries") == set()
    assert lower_is_better("eer") and not lower_is_better("tar_at_far_1e-2")
    assert not is_score("verification_threshold") and is_score("map_at_r")
