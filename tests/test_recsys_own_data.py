"""Bring-your-own data (issue 11): one id mapping for train/test/validation, test-only ids
dropped and counted (or an error), id maps verified by evaluate, numpy scalars as numbers, and
an on_epoch callback returning None."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from metrickit import recsys
from metrickit.recsys import FitConfig, MatrixFactorization, evaluate, fit, from_arrays

TRAIN = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c", "c"],
                      "item_id": ["x", "y", "y", "z", "x", "z"]})
# "w" is an item seen only at test time, "d" a user seen only at test time, (a, x) is in train
TEST = pd.DataFrame({"user_id": ["a", "b", "c", "a", "d", "a"],
                     "item_id": ["z", "x", "y", "w", "x", "x"]})


def test_from_arrays_with_train_maps_drops_and_counts_test_only_ids():
    train = from_arrays(TRAIN.user_id, TRAIN.item_id)
    test = from_arrays(TEST.user_id, TEST.item_id, user_map=train.users, item_map=train.items,
                       unknown="drop")
    assert len(test) == 4  # (a, w) and (d, x) dropped
    assert test.dropped == {"unknown user id": 1, "unknown item id": 1}
    assert test.users is train.users and test.items is train.items


def test_from_arrays_with_train_maps_errors_explicitly_on_test_only_ids():
    train = from_arrays(TRAIN.user_id, TRAIN.item_id)
    with pytest.raises(ValueError, match=r"1 rows have a user id not in the given id map, e\.g\. "
                                         r"'d' in row 4.*unknown='drop'"):
        from_arrays(TEST.user_id, TEST.item_id, user_map=train.users, item_map=train.items)


def _assert_dataset(ds):
    assert ds.test.users is ds.train.users and ds.test.items is ds.train.items
    assert len(ds.train) == 6 and len(ds.test) == 3
    assert ds.dropped["test"] == {"unknown user id": 1, "unknown item id": 1, "in train": 1}


def test_make_dataset_from_dataframes_and_csv(tmp_path):
    _assert_dataset(recsys.make_dataset(TRAIN, TEST))
    TRAIN.to_csv(tmp_path / "train.csv", index=False)
    TEST.to_csv(tmp_path / "test.csv", index=False)
    ds = recsys.make_dataset(tmp_path / "train.csv", str(tmp_path / "test.csv"),
                      validation=tmp_path / "test.csv")
    _assert_dataset(ds)
    assert ds.validation.items is ds.items and len(ds.validation) == 3


def test_make_dataset_from_sparse_drops_rows_without_training_data():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]))
    test = sp.csr_matrix(np.array([[0, 0, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]))
    ds = recsys.make_dataset(train, test)
    assert ds.train.shape == (3, 4) and ds.test.users is ds.users
    # (0, 3): item 3 has no train row; (2, 0): user 2 has none; (1, 1) is a train pair
    assert ds.dropped["test"] == {"unknown user id": 1, "unknown item id": 1, "in train": 1}
    assert sorted(zip(ds.test.user.tolist(), ds.test.item.tolist(), strict=True)) == [
        (0, 2), (1, 0)]


def test_make_dataset_unknown_error_and_bad_parts():
    with pytest.raises(ValueError, match="test: 1 rows have a user id not in the given id map"):
        recsys.make_dataset(TRAIN, TEST, unknown="error")
    with pytest.raises(ValueError, match="unknown must be one of"):
        recsys.make_dataset(TRAIN, TEST, unknown="keep")
    with pytest.raises(TypeError, match="test must be a pandas DataFrame, a CSV path"):
        recsys.make_dataset(TRAIN, [("a", "x")])
    with pytest.raises(ValueError, match="test has shape"):
        recsys.make_dataset(sp.eye(3, format="csr"), sp.eye(4, format="csr"))
    with pytest.raises(ValueError, match="train: item_col=.movie. is not a column"):
        recsys.make_dataset(TRAIN, item_col="movie")
    with pytest.raises(FileNotFoundError, match="train: interaction file"):
        recsys.make_dataset("no/such.csv")


def test_own_data_trains_and_evaluates_end_to_end():
    ds = recsys.make_dataset(TRAIN, TEST)
    torch.manual_seed(0)
    model = MatrixFactorization(ds.train.n_users, ds.train.n_items, dim=4)
    fit(model, ds.train, FitConfig(epochs=2, batch_size=4, progress=False, threads=1))
    m = evaluate(model, ds.train, ds.test, k=2)
    assert m["users"] == 3 and m["hit_rate_at_2"] == 1  # one candidate per user: the test item


def test_evaluate_rejects_data_encoded_with_another_id_order():
    train = from_arrays(["a", "b", "c"], ["x", "y", "z"])
    # same users and items, encoded separately: the user order differs
    test = from_arrays(["b", "a", "c"], ["x", "y", "z"])
    assert test.shape == train.shape
    with pytest.raises(ValueError, match="train and test have different user id maps"):
        evaluate(recsys.popularity_scorer(train), train, test)


def test_evaluate_rejects_a_model_fitted_on_other_id_maps():
    a = from_arrays(["a", "b", "c", "a"], ["x", "y", "z", "y"])
    b = from_arrays(["c", "b", "a", "c"], ["x", "y", "z", "y"])  # same shape, other ids order
    model = MatrixFactorization(3, 3, dim=2)
    fit(model, a, FitConfig(epochs=1, progress=False, threads=1))
    assert model.user_ids is a.users
    test = from_arrays(["a"], ["z"], user_map=b.users, item_map=b.items)
    with pytest.raises(ValueError, match="the model and train have different user id maps"):
        evaluate(model, b, test)
    with pytest.raises(ValueError, match="fitted on data with another user id map"):
        fit(model, b, FitConfig(epochs=1, progress=False))


def test_numpy_integer_scalars_are_accepted_as_sizes():
    users, items = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 3])
    n_users, n_items, dim = users.max() + 1, items.max() + 1, np.int64(4)
    model = MatrixFactorization(n_users, n_items, dim=dim)
    assert (model.n_users, model.n_items, model.dim) == (3, 4, 4)
    assert type(model.n_users) is int
    data = from_arrays(users, items, user_map=recsys.IdMap(range(n_users)),
                       item_map=recsys.IdMap(range(n_items)))
    cfg = FitConfig(epochs=np.int64(1), batch_size=np.int32(2), lr=np.float32(0.1),
                    max_sampled=np.int64(3), progress=False, threads=np.int64(1)).validate()
    assert (type(cfg.epochs), type(cfg.lr), cfg.batch_size) == (int, float, 2)
    fit(model, data, cfg)
    train, test = recsys.random_split(data, n_test=np.int64(1), min_train=np.int64(1))
    recsys.evaluate(model, train, test, k=np.int64(2), batch_size=np.int64(2))
    recsys.leave_last_out(from_arrays(users, items, timestamps=[1, 2, 3, 4]), n_test=np.int8(1))
    recsys.NegativeSampler(data).sample(torch.tensor([0, 1]), np.int64(2))


def test_on_epoch_may_return_none_or_a_mapping_only():
    data = from_arrays([0, 1, 1, 2], [0, 0, 1, 2])
    model = MatrixFactorization(3, 3, dim=2)
    seen = []
    hist = fit(model, data, FitConfig(epochs=2, progress=False, threads=1),
               on_epoch=lambda epoch, m: seen.append(epoch))
    assert seen == [1, 2] and [h["epoch"] for h in hist] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in hist)
    with pytest.raises(TypeError, match="on_epoch must return a mapping .* or None, got float"):
        fit(model, data, FitConfig(epochs=1, progress=False), on_epoch=lambda e, m: 0.5)


def test_fit_runs_on_the_requested_threads_and_restores_them():
    data = from_arrays([0, 1, 1, 2], [0, 0, 1, 2])
    before = torch.get_num_threads()
    seen = []
    fit(MatrixFactorization(3, 3, dim=2), data, FitConfig(epochs=1, progress=False, threads=1),
        on_epoch=lambda e, m: seen.append(torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == before
    assert not hasattr(recsys, "default_threads")  # one rule for every command: metrickit.threads
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        FitConfig(threads=0).validate()


@pytest.mark.parametrize("loss", ["warp", "bpr"])
def test_published_benchmark_uses_the_library_defaults(loss):
    from benchmarks import recsys_peers

    cfg = recsys_peers.ours_config(loss, threads=1).to_dict()
    default = FitConfig(loss=loss).to_dict()
    differs = {k for k in cfg if cfg[k] != default[k]}
    assert differs <= {"epochs", "seed", "progress", "threads"}, differs


def test_early_stopping_restores_the_best_epoch():
    data = from_arrays([0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 2, 3])
    model = MatrixFactorization(3, 4, dim=2)
    values, saved = [0.1, 0.5, 0.4, 0.3, 0.9], {}

    def on_epoch(epoch, m):
        saved[epoch] = m.user_weight.detach().clone()
        return {"score": values[epoch - 1]}

    hist = fit(model, data, FitConfig(epochs=5, batch_size=2, progress=False, threads=1,
                                      monitor="score", patience=2), on_epoch=on_epoch)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]  # stopped 2 epochs after the best
    assert torch.equal(model.user_weight, saved[2])
    with pytest.raises(ValueError, match="monitor='val_auc' is not among the epoch's values"):
        fit(model, data, FitConfig(epochs=1, progress=False, monitor="val_auc"))


def test_validation_metrics_carved_from_train_drive_early_stopping():
    ml = recsys.load_movielens("movielens-100k", max_users=60)
    train, test = recsys.random_split(ml.interactions.to_implicit(), n_test=5, seed=0)
    fit_train, val = recsys.random_split(train, n_test=3, seed=1)  # carved from train
    torch.manual_seed(0)
    model = MatrixFactorization(train.n_users, train.n_items, dim=8)
    on_epoch = recsys.validation_metrics(fit_train, val, k=5)
    hist = fit(model, fit_train, FitConfig(epochs=4, batch_size=256, progress=False, threads=1,
                                           monitor="val_precision_at_5", patience=1),
               on_epoch=on_epoch)
    assert {"val_precision_at_5", "val_ndcg_at_5", "val_auc"} <= set(hist[0])
    best = max(h["val_precision_at_5"] for h in hist)
    assert on_epoch(0, model)["val_precision_at_5"] == pytest.approx(best)


def test_default_learning_rate_scales_with_the_dimension(monkeypatch):
    from metrickit.recsys import train as train_module
    from metrickit.recsys.train import auto_lr

    assert auto_lr("adagrad", 10) == pytest.approx(0.3)
    assert auto_lr("adagrad", 4) == pytest.approx(0.3)
    assert auto_lr("adagrad", 64) == pytest.approx(0.3 * 10 / 64)
    assert auto_lr("adam", 32) == pytest.approx(0.01 * 10 / 32)
    assert auto_lr("adagrad", 4, "sparse") == pytest.approx(0.1)
    assert auto_lr("adagrad", 40, "sparse") == pytest.approx(0.05)
    assert auto_lr("adagrad", 40, "numba") == auto_lr("adagrad", 40, "sparse")
    used = []
    real = train_module.make_optimizer
    monkeypatch.setattr(train_module, "make_optimizer",
                        lambda model, name, lr: used.append(lr) or real(model, name, lr))
    real_rows = train_module.RowAdagrad
    monkeypatch.setattr(train_module, "RowAdagrad",
                        lambda table, lr: used.append(lr) or real_rows(table, lr))
    data = from_arrays([0, 1, 1, 2], [0, 0, 1, 2])
    for cfg in (FitConfig(epochs=1, progress=False, threads=1, engine="autograd"),
                FitConfig(epochs=1, progress=False, threads=1, lr=0.05, engine="autograd"),
                FitConfig(epochs=1, progress=False, threads=1, engine="sparse"),  # 2 tables
                FitConfig(epochs=1, progress=False, threads=1, lr=0.07, engine="sparse")):
        fit(MatrixFactorization(3, 3, dim=40), data, cfg)
    assert used == [pytest.approx(0.075), 0.05, pytest.approx(0.05), pytest.approx(0.05),
                    0.07, 0.07]


def test_default_batch_size_gives_an_epoch_at_least_128_steps():
    from metrickit.recsys.train import auto_batch_size

    assert auto_batch_size(90_570) == 512  # ML-100K's train split
    assert auto_batch_size(128 * 2048) == 2048
    assert auto_batch_size(128 * 2048 - 1) == 1024
    assert auto_batch_size(1_000_000) == 2048
    assert auto_batch_size(10) == 256
    assert auto_batch_size(np.int64(10), "autograd") == 2048
    with pytest.raises(ValueError, match="n_interactions"):
        auto_batch_size(0)
    with pytest.raises(ValueError, match="engine"):
        auto_batch_size(10, "auto")


def test_fit_without_a_batch_size_uses_the_automatic_one():
    from recsys_checks import random_interactions

    data = random_interactions(60, 40, seed=3, max_per_user=20)
    assert 256 < len(data) < 128 * 256  # auto: 256, one epoch is several batches

    def weights(batch_size):
        torch.manual_seed(0)
        model = MatrixFactorization(data.n_users, data.n_items, dim=4)
        fit(model, data, FitConfig(epochs=2, batch_size=batch_size, progress=False, threads=1))
        return model.user_weight.detach().clone()

    auto = weights(None)
    assert torch.equal(auto, weights(256))
    assert not torch.equal(auto, weights(2048))


def test_benchmark_report_tables_every_cell(tmp_path):
    import json

    from benchmarks import recsys_peers

    curve = [{"epoch": 1, "seconds": 1.0, "precision_at_10": 0.1, "auc": 0.8},
             {"epoch": 2, "seconds": 2.0, "precision_at_10": 0.2, "auc": 0.9}]
    for method, scale in (("lightfm-warp", 1.0), ("ours-warp", 2.5)):
        pts = [{**p, "precision_at_10": p["precision_at_10"] * scale} for p in curve]
        cell = {"data": "d", "split": "random", "dim": 10, "method": method, "curve": pts,
                "best": pts[-1], "epoch_seconds": 1.0, "machine": {"load": 1.0}}
        (tmp_path / f"{method}.json").write_text(json.dumps(cell))
    text = recsys_peers.report(tmp_path)
    assert "| d | random | 10 | 0.5000 / 0.9000 (2) | 0.2000 / 0.9000 (2) |" in text
    assert "reach 1.0" in text and "reach 2.0" in text  # ours reaches 0.2 at epoch 1


def test_benchmark_report_means_the_warp_cells_over_seeds(tmp_path):
    import json

    from benchmarks import recsys_peers

    bests = {("ours-warp", 0): (0.20, 0.90), ("ours-warp", 1): (0.30, 0.895),
             ("lightfm-warp", 0): (0.26, 0.90), ("lightfm-warp", 1): (0.22, 0.90),
             ("lightfm-warp", 2): (0.99, 0.99)}  # a seed ours lacks is left out
    for (method, seed), (p10, auc) in bests.items():
        best = {"epoch": 1, "seconds": 1.0, "precision_at_10": p10, "auc": auc}
        cell = {"data": "d", "split": "temporal", "dim": 64, "method": method, "seed": seed,
                "curve": [best], "best": best, "epoch_seconds": 1.0, "machine": {"load": 1.0}}
        (tmp_path / f"{method}_{seed}.json").write_text(json.dumps(cell))
    text = recsys_peers.report(tmp_path)
    assert "| d | temporal | 64 | 0.2000 / 0.9000 (1) | 0.2600 / 0.9000 (1) |" in text  # seed 0
    assert ("| d | temporal | 64 | 0, 1 | 0.2500 (0.2000, 0.3000) | 0.2400 (0.2600, 0.2200) | "
            "0.8975 (0.9000, 0.8950) | 0.9000 (0.9000, 0.9000) | met (+0.0100) | met (-0.0025) |"
            in text)
    (tmp_path / "ours-warp_1.json").unlink()  # one seed: no mean table
    assert "over seeds" not in recsys_peers.report(tmp_path)
