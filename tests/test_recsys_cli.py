import json

import pytest

from metrickit.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("recsys") / "run"
    rc = main(["recsys", "train", "--dataset", "movielens-100k", "--max-users", "40", "--loss",
               "bpr", "--epochs", "2", "--dim", "8", "--batch-size", "512", "-o", str(out),
               "--quiet", "--show-users", "2", "--threads", "1"])
    assert rc == 0
    return out


def test_train_writes_a_run_directory(run_dir, capsys):
    for name in ("config.json", "metrics.json", "curves.png", "recommendations.txt",
                 "recommendations.json", "model.pt"):
        assert (run_dir / name).is_file(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["model"]["users"] == 40 and m["data"]["test"] == 400
    assert len(m["history"]) == 2 and {"loss", "test_precision_at_10", "test_auc"} <= set(
        m["history"][0])
    assert 0 <= m["popularity"]["precision_at_10"] <= 1
    recs = json.loads((run_dir / "recommendations.json").read_text())
    assert len(recs) == 2 and len(recs[0]["recommended"]) == 10
    assert all("(" in r["title"] for r in recs[0]["recommended"])  # titles with years
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reproduces_the_metrics(run_dir, capsys):
    assert main(["recsys", "evaluate", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    m = json.loads((run_dir / "metrics.json").read_text())
    assert f"{m['model']['precision_at_10']:.4f}" in printed
    assert "popularity" in printed and "precision_at_10" in printed and "@" not in printed


def test_old_spellings_still_work_with_a_deprecation_message(run_dir, tmp_path, capsys):
    assert main(["recsys", "evaluate", "--run", str(run_dir), "--k", "5"]) == 0
    captured = capsys.readouterr()
    assert "--run is deprecated" in captured.err and "--k is deprecated" in captured.err
    assert "precision_at_5" in captured.out
    out = tmp_path / "old"
    assert main(["recsys", "train", "--data", "movielens-100k", "--max-users", "10", "--epochs",
                 "1", "--out", str(out), "--k", "5", "--quiet", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "--data is deprecated; use --dataset" in err and "--out is deprecated" in err
    assert json.loads((out / "config.json").read_text())["top_k"] == 5


def test_recommend_lists_titles_for_a_user(run_dir, capsys):
    user = json.loads((run_dir / "recommendations.json").read_text())[0]["user"]
    assert main(["recsys", "recommend", str(run_dir), "--user", user, "-n", "4"]) == 0
    out = capsys.readouterr().out
    assert f"user {user}" in out and "   4. " in out and "   5. " not in out
    assert "(19" in out  # titles with years
    assert main(["recsys", "recommend", str(run_dir), "--user", "nobody"]) == 2
    assert "user 'nobody' is not in the run's data" in capsys.readouterr().err


def test_csv_data_and_errors(tmp_path, capsys):
    csv = tmp_path / "events.csv"
    rows = ["user,item,rating"] + [f"u{u},i{(u * 7 + j) % 30},{1 + j % 5}" for u in range(12)
                                   for j in range(12)]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    args = ["recsys", "train", "--dataset", str(csv), "--user-col", "user", "--item-col", "item",
            "--rating-col", "rating", "--threshold", "2", "--n-test", "2", "--epochs", "1",
            "--loss", "warp", "--quiet", "-o", str(out)]
    assert main(args) == 0
    assert "recommendations" in capsys.readouterr().out or (out / "recommendations.txt").is_file()
    assert main(args[:-2] + ["--model", "two-tower", "-o", str(tmp_path / "tt")]) == 2
    assert "two-tower needs side features" in capsys.readouterr().err
    assert not (tmp_path / "tt").exists()
    assert main(args[:-2] + ["--engine", "autograd", "-o", str(tmp_path / "ag")]) == 0
    assert json.loads((tmp_path / "ag" / "config.json").read_text())["engine"] == "autograd"
    assert main(args[:-2] + ["--engine", "sparse", "--optimizer", "adam", "-o",
                             str(tmp_path / "sp")]) == 2
    assert "engine='sparse' needs" in capsys.readouterr().err
    assert not (tmp_path / "sp").exists()
    assert main(["recsys", "train", "--dataset", "nowhere", "--quiet"]) == 2
    assert "neither a built-in dataset" in capsys.readouterr().err
    assert main(["recsys", "train", "--dataset", str(tmp_path / "x.csv"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["recsys", "evaluate", str(tmp_path)]) == 2
    assert "model.pt" in capsys.readouterr().err


def test_two_tower_with_movielens_side_features(tmp_path):
    out = tmp_path / "tt"
    assert main(["recsys", "train", "--dataset", "movielens-100k", "--max-users", "20", "--model",
                 "two-tower", "--loss", "sampled_softmax", "--epochs", "1", "--dim", "8",
                 "--split", "leave-last-out", "--quiet", "-o", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["test"] == 20 and 0 <= m["model"]["auc"] <= 1
