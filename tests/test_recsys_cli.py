import json

import pytest

from metrickit.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("recsys") / "run"
    rc = main(["recsys", "train", "--data", "movielens-100k", "--max-users", "40", "--loss",
               "bpr", "--epochs", "2", "--dim", "8", "--batch-size", "512", "--out", str(out),
               "--quiet", "--show-users", "2"])
    assert rc == 0
    return out


def test_train_writes_a_run_directory(run_dir, capsys):
    for name in ("config.json", "metrics.json", "curves.png", "recommendations.txt",
                 "recommendations.json", "model.pt"):
        assert (run_dir / name).is_file(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["model"]["users"] == 40 and m["data"]["test"] == 400
    assert len(m["history"]) == 2 and {"loss", "test_precision@10", "test_auc"} <= set(
        m["history"][0])
    assert 0 <= m["popularity"]["precision@10"] <= 1
    recs = json.loads((run_dir / "recommendations.json").read_text())
    assert len(recs) == 2 and len(recs[0]["recommended"]) == 10
    assert all("(" in r["title"] for r in recs[0]["recommended"])  # titles with years
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reproduces_the_metrics(run_dir, capsys):
    assert main(["recsys", "evaluate", "--run", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    m = json.loads((run_dir / "metrics.json").read_text())
    assert f"{m['model']['precision@10']:.4f}" in printed
    assert "popularity" in printed


def test_csv_data_and_errors(tmp_path, capsys):
    csv = tmp_path / "events.csv"
    rows = ["user,item,rating"] + [f"u{u},i{(u * 7 + j) % 30},{1 + j % 5}" for u in range(12)
                                   for j in range(12)]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    args = ["recsys", "train", "--data", str(csv), "--user-col", "user", "--item-col", "item",
            "--rating-col", "rating", "--threshold", "2", "--n-test", "2", "--epochs", "1",
            "--loss", "warp", "--quiet", "--out", str(out)]
    assert main(args) == 0
    assert "recommendations" in capsys.readouterr().out or (out / "recommendations.txt").is_file()
    assert main(args[:-2] + ["--model", "two-tower", "--out", str(out)]) == 2
    assert "two-tower needs side features" in capsys.readouterr().err
    assert main(["recsys", "train", "--data", "nowhere", "--quiet"]) == 2
    assert "neither a built-in dataset" in capsys.readouterr().err
    assert main(["recsys", "train", "--data", str(tmp_path / "x.csv"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["recsys", "evaluate", "--run", str(tmp_path)]) == 2
    assert "model.pt" in capsys.readouterr().err


def test_two_tower_with_movielens_side_features(tmp_path):
    out = tmp_path / "tt"
    assert main(["recsys", "train", "--data", "movielens-100k", "--max-users", "20", "--model",
                 "two-tower", "--loss", "sampled_softmax", "--epochs", "1", "--dim", "8",
                 "--split", "leave-last-out", "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["test"] == 20 and 0 <= m["model"]["auc"] <= 1
