"""``metrickit recsys``: train and evaluate implicit-feedback recommenders (BPR, WARP, hinge,
sampled softmax) on MovieLens or a CSV of interactions.

``recsys train`` writes a run directory: config.json, metrics.json (final metrics, the
popularity baseline, the per-epoch history), curves.png (train loss, test Precision@k and AUC
per epoch), recommendations.txt/.json (top-N for a few users, with titles) and model.pt.
``recsys evaluate --run DIR`` rebuilds the same split from the saved config and re-evaluates.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import UsageError

_EPILOG = "Example: metrickit recsys train --data movielens-100k --loss warp --epochs 10"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "recsys", help="train/evaluate recommenders (BPR, WARP, ...)", description=__doc__
    )
    sub = parser.add_subparsers(dest="recsys_command", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train a recommender, write a run directory",
                           epilog=_EPILOG)
    _add_data_options(train)
    _add_train_options(train)
    train.add_argument("--out", metavar="DIR", help="run directory [runs/recsys-<time>]")
    train.add_argument("--show-users", type=int, default=3, help="users in the top-N example [3]")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)
    evaluate = sub.add_parser("evaluate", help="re-evaluate the model of a run directory")
    evaluate.add_argument("--run", required=True, metavar="DIR", help="a recsys train run dir")
    evaluate.add_argument("--k", type=int, help="cut-off (default: the run's)")
    evaluate.set_defaults(func=run_evaluate)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add("--data", default="movielens-100k",
        help="movielens-100k, movielens-1m, or a CSV of interactions [movielens-100k]")
    add("--user-col", default="user_id", help="CSV: user column [user_id]")
    add("--item-col", default="item_id", help="CSV: item column [item_id]")
    add("--rating-col", help="CSV: rating/weight column (optional)")
    add("--time-col", help="CSV: timestamp column (needed for --split leave-last-out)")
    add("--sep", default=",", help="CSV: field separator [,]")
    add("--threshold", type=float,
        help="keep interactions with rating >= threshold as positives [all are positives]")
    add("--max-users", type=int, help="MovieLens: keep the first N users (a small slice)")
    add("--split", choices=("random", "leave-last-out"), default="random",
        help="random per-user holdout, or each user's latest items [random]")
    add("--n-test", type=int, help="test items per user [10 random, 1 leave-last-out]")
    add("--test-fraction", type=float, help="random split: fraction of each user's items")
    add("--k", type=int, default=10, help="cut-off of the @k metrics [10]")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from ..recsys.sampling import STRATEGIES
    from ..recsys.train import LOSSES, OPTIMIZERS, FitConfig

    d = FitConfig()
    add = p.add_argument
    add("--loss", choices=LOSSES, default=d.loss, help=f"[{d.loss}]")
    add("--model", choices=("mf", "two-tower"), default="mf",
        help="matrix factorisation, or LightFM-style feature towers (MovieLens) [mf]")
    add("--dim", type=int, default=10, help="embedding size [10, LightFM's default]")
    add("--epochs", type=int, default=d.epochs, help=f"[{d.epochs}]")
    add("--batch-size", type=int, default=d.batch_size, help=f"[{d.batch_size}]")
    add("--lr", type=float, default=d.lr, help=f"learning rate [{d.lr}]")
    add("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"[{d.optimizer}]")
    add("--l2", type=float, default=d.l2, help=f"L2 on the vectors of a batch [{d.l2}]")
    add("--margin", type=float, default=d.margin, help=f"hinge/WARP margin [{d.margin}]")
    add("--max-sampled", type=int, default=d.max_sampled, help=f"WARP draws [{d.max_sampled}]")
    add("--n-negatives", type=int, default=d.n_negatives,
        help=f"BPR/hinge negatives per positive [{d.n_negatives}]")
    add("--sampler", choices=STRATEGIES, default=d.sampler, help=f"negatives [{d.sampler}]")
    add("--temperature", type=float, default=d.temperature,
        help=f"sampled softmax temperature [{d.temperature}]")
    add("--seed", type=int, default=0, help="seed of split, init and sampling [0]")
    add("--device", default="cpu", help="torch device [cpu]")


def _load(cfg: dict[str, Any]):
    """(interactions, titles or None, MovieLens or None) from the data options."""
    from ..recsys import data as rdata
    from ..recsys.datasets import DATASETS, load_movielens

    if cfg["data"] in DATASETS:
        ml = load_movielens(cfg["data"], cfg["max_users"])
        return ml.interactions, ml.titles, ml
    if not Path(cfg["data"]).suffix:
        raise UsageError(
            f"--data {cfg['data']!r} is neither a built-in dataset ({', '.join(DATASETS)}) nor a "
            "file path"
        )
    inter = rdata.from_csv(cfg["data"], cfg["user_col"], cfg["item_col"], cfg["rating_col"],
                           cfg["time_col"], cfg["sep"])
    return inter, None, None


def _prepare(cfg: dict[str, Any]):
    from ..recsys.splits import leave_last_out, random_split

    inter, titles, ml = _load(cfg)
    if cfg["threshold"] is not None or inter.weights is not None:
        inter = inter.to_implicit(cfg["threshold"])
    if len(inter) == 0:
        raise UsageError(f"no interaction has a rating >= {cfg['threshold']}")
    if cfg["split"] == "random":
        n_test = None if cfg["test_fraction"] is not None else (cfg["n_test"] or 10)
        split = random_split(inter, n_test, cfg["test_fraction"], seed=cfg["seed"])
    else:
        split = leave_last_out(inter, cfg["n_test"] or 1)
    return split, titles, ml


def _build_model(cfg: dict[str, Any], train, ml):
    from ..recsys.datasets import movielens_features
    from ..recsys.models import MatrixFactorization, TwoTower

    torch.manual_seed(cfg["seed"])
    if cfg["model"] == "two-tower":
        if ml is None:
            raise UsageError("--model two-tower needs side features: use a MovieLens dataset")
        users, items, _, _ = movielens_features(ml)
        model = TwoTower(users, items, dim=cfg["dim"])
    else:
        model = MatrixFactorization(train.n_users, train.n_items, dim=cfg["dim"])
    return model.to(cfg["device"])


def _fit_config(cfg: dict[str, Any], quiet: bool):
    from ..recsys.train import FitConfig

    names = {f.name for f in fields(FitConfig)}
    return FitConfig(**{k: v for k, v in cfg.items() if k in names}, progress=not quiet)


def _table(rows: dict[str, dict[str, float]]) -> str:
    names = [k for k in next(iter(rows.values())) if k != "users"]
    lines = [f"{'':<12}" + "".join(f"{n:>14}" for n in names)]
    for label, m in rows.items():
        lines.append(f"{label:<12}" + "".join(f"{m[n]:>14.4f}" for n in names))
    return "\n".join(lines)


def _recommendations(model, split, titles, users: np.ndarray, k: int) -> list[dict[str, Any]]:
    from ..recsys.metrics import top_k

    train, test = split
    rows = torch.as_tensor(users, device=model._device())
    scores = model.score_all(rows)
    csr = train.to_csr()
    exclude = torch.as_tensor(csr[users].toarray() > 0, device=scores.device)
    items, valid = top_k(scores, exclude, k)
    held = test.to_csr()
    name = (lambda i: str(titles[i])) if titles is not None else (
        lambda i: str(train.items.ids[i]))
    out = []
    for r, u in enumerate(users):
        top = [int(i) for i, ok in zip(items[r].tolist(), valid[r].tolist(), strict=True) if ok]
        test_items = set(held[u].indices.tolist())
        out.append({
            "user": str(train.users.ids[u]),
            "recommended": [{"item": str(train.items.ids[i]), "title": name(i),
                             "in_test": i in test_items} for i in top],
            "liked_in_train": [name(i) for i in csr[u].indices[:5]],
        })
    return out


def run_train(args: argparse.Namespace) -> int:
    from .. import plots
    from ..recsys.metrics import evaluate, popularity_scorer
    from ..recsys.train import fit

    cfg = {k: v for k, v in vars(args).items() if k not in ("func", "command", "recsys_command")}
    out = Path(cfg.pop("out") or f"runs/recsys-{time.strftime('%Y%m%d-%H%M%S')}")
    show, quiet = cfg.pop("show_users"), cfg.pop("quiet")
    fit_config = _fit_config(cfg, quiet).validate()
    split, titles, ml = _prepare(cfg)
    train, test = split
    model = _build_model(cfg, train, ml)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    k = cfg["k"]

    def on_epoch(epoch: int, m) -> dict[str, float]:
        r = evaluate(m, train, test, k=k)
        return {f"test_precision@{k}": r[f"precision@{k}"], "test_auc": r["auc"]}

    history = fit(model, train, fit_config, on_epoch=on_epoch)
    final = evaluate(model, train, test, k=k)
    baseline = evaluate(popularity_scorer(train), train, test, k=k)
    print(f"{train.n_users} users, {train.n_items} items, {len(train)} train / {len(test)} test "
          f"interactions; {final['users']} users evaluated (users without test items excluded)")
    print(_table({cfg["loss"]: final, "popularity": baseline}))
    metrics = {
        "model": final, "popularity": baseline, "history": history,
        "train_seconds": sum(h["seconds"] for h in history),
        "data": {"users": train.n_users, "items": train.n_items, "train": len(train),
                 "test": len(test)},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plots.plot_curves({
        "train loss": [h["loss"] for h in history],
        f"test Precision@{k}": [h[f"test_precision@{k}"] for h in history],
        "test AUC": [h["test_auc"] for h in history],
    }, out / "curves.png", title=f"{cfg['loss']} on {Path(cfg['data']).name}")
    evaluated = np.flatnonzero(test.user_counts() > 0)[: max(show, 0)]
    recs = _recommendations(model, split, titles, evaluated, k)
    (out / "recommendations.json").write_text(json.dumps(recs, indent=2))
    text = "\n\n".join(
        f"user {r['user']} (liked e.g. {'; '.join(r['liked_in_train'])}):\n" + "\n".join(
            f"  {n + 1:>2}. {x['title']}" + ("  [in test]" if x["in_test"] else "")
            for n, x in enumerate(r["recommended"]))
        for r in recs)
    (out / "recommendations.txt").write_text(text + "\n")
    print(text)
    torch.save({"state_dict": model.state_dict(), "config": cfg}, out / "model.pt")
    print(f"run directory: {out}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..recsys.metrics import evaluate, popularity_scorer

    run = Path(args.run)
    if not (run / "model.pt").is_file():
        raise FileNotFoundError(f"{run / 'model.pt'} not found: is {run} a recsys train run?")
    saved = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    cfg = saved["config"]
    split, _, ml = _prepare(cfg)
    train, test = split
    cfg = {**cfg, "device": "cpu"}
    model = _build_model(cfg, train, ml)
    model.load_state_dict(saved["state_dict"])
    k = args.k or cfg["k"]
    final = evaluate(model, train, test, k=k)
    print(_table({cfg["loss"]: final, "popularity": evaluate(popularity_scorer(train), train,
                                                              test, k=k)}))
    return 0
