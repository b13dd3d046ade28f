"""``metrickit recsys``: train and evaluate implicit-feedback recommenders (BPR, WARP, hinge,
sampled softmax) on MovieLens or a CSV of interactions.

``recsys train`` writes a run directory (created new, locked, every file written atomically):
config.json, metrics.json (final metrics, the popularity baseline, the per-epoch history),
curves.png (train loss, test Precision@k and AUC per epoch), recommendations.txt/.json (top-N for
a few users, with titles) and model.pt (weights and the user/item ids, loaded with
``weights_only=True``). ``recsys evaluate RUN_DIR`` rebuilds the same split from the saved config
and re-evaluates; ``recsys recommend RUN_DIR --user ID`` lists a user's top-N items. Metric keys
read ``precision_at_10`` as everywhere in metrickit.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..rundir import RunDir, check_run
from ..training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from . import UsageError
from ._common import (
    add_dataset,
    add_deprecated,
    add_device,
    add_output,
    add_quiet,
    add_run_dir,
    add_threads,
    add_top_k,
    apply_threads,
    run_dir_of,
)

_EPILOG = "Example: metrickit recsys train --dataset movielens-100k --loss warp --epochs 10"
RUN_KIND = "recsys"
MODEL_FILE = "model.pt"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "recsys", help="train/evaluate recommenders (BPR, WARP, ...)", description=__doc__
    )
    sub = parser.add_subparsers(dest="recsys_command", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train a recommender, write a run directory",
                           epilog=_EPILOG)
    _add_data_options(train)
    _add_train_options(train)
    add_output(train, "run directory [runs/recsys-<time>]")
    add_deprecated(train, "--out", "-o/--output", dest="output")
    train.add_argument("--show-users", type=int, default=3, help="users in the top-N example [3]")
    add_quiet(train)
    add_threads(train)
    train.set_defaults(func=run_train)

    evaluate = sub.add_parser("evaluate", help="re-evaluate the model of a run directory")
    add_run_dir(evaluate, "a recsys train run directory")
    add_top_k(evaluate, "cut-off of the @k metrics (default: the run's)")
    add_deprecated(evaluate, "--k", "-k/--top-k", dest="top_k", type=int)
    add_threads(evaluate)
    evaluate.set_defaults(func=run_evaluate)

    recommend = sub.add_parser("recommend", help="top-N items for a user of a run's data")
    add_run_dir(recommend, "a recsys train run directory")
    recommend.add_argument("--user", required=True, metavar="ID", help="the user's raw id")
    recommend.add_argument("-n", type=int, default=10, help="number of items [10]")
    add_threads(recommend)
    recommend.set_defaults(func=run_recommend)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add_dataset(p, "movielens-100k, movielens-1m, or a CSV of interactions [movielens-100k]",
                default="movielens-100k")
    add_deprecated(p, "--data", "--dataset", dest="dataset")
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
    add_top_k(p, "cut-off of the @k metrics [10]", default=10)
    add_deprecated(p, "--k", "-k/--top-k", dest="top_k", type=int)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from ..recsys.sampling import STRATEGIES
    from ..recsys.steps import SOFTMAX_NEGATIVES
    from ..recsys.train import ENGINES, LOSSES, OPTIMIZERS, FitConfig

    d = FitConfig()
    add = p.add_argument
    add("--loss", choices=LOSSES, default=d.loss, help=f"[{d.loss}]")
    add("--model", choices=("mf", "two-tower"), default="mf",
        help="matrix factorisation, or LightFM-style feature towers (MovieLens) [mf]")
    add("--dim", type=int, default=10, help="embedding size [10, LightFM's default]")
    add("--epochs", type=int, default=d.epochs, help=f"[{d.epochs}]")
    add("--batch-size", type=int, default=d.batch_size,
        help="[sparse engine: 2048, halved down to 256 while an epoch has < 128 steps; "
             "autograd: 2048]")
    add("--lr", type=float, default=d.lr,
        help="learning rate [sparse/numba engine 0.1·min(1, √(10/dim)); autograd: Adagrad "
             "0.3·min(1, 10/dim), Adam 0.01·min(1, 10/dim)]")
    add("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"[{d.optimizer}]")
    add("--engine", choices=ENGINES, default=d.engine,
        help="sparse: closed-form gradients and row-wise Adagrad (mf, Adagrad, pairwise "
             "losses); numba: the same as one compiled loop (needs numba, CPU); autograd: "
             f"torch's optimizer; auto: numba, else sparse, where it applies [{d.engine}]")
    add("--l2", type=float, default=d.l2, help=f"L2 on the vectors of a batch [{d.l2}]")
    add("--margin", type=float, default=d.margin, help=f"hinge/WARP margin [{d.margin}]")
    add("--max-sampled", type=int, default=d.max_sampled, help=f"WARP draws [{d.max_sampled}]")
    add("--n-negatives", type=int, default=d.n_negatives,
        help=f"BPR/hinge negatives per positive [{d.n_negatives}]")
    add("--sampler", choices=STRATEGIES, default=d.sampler, help=f"negatives [{d.sampler}]")
    add("--temperature", type=float, default=d.temperature,
        help=f"sampled softmax temperature [{d.temperature}]")
    add("--kos-k", type=int, default=d.kos_k, help=f"warp_kos: k-th best positive [{d.kos_k}]")
    add("--kos-n", type=int, default=d.kos_n, help=f"warp_kos: positives drawn [{d.kos_n}]")
    add("--softmax-negatives", choices=SOFTMAX_NEGATIVES, default=d.softmax_negatives,
        help=f"sampled softmax: in-batch or sampled by --sampler [{d.softmax_negatives}]")
    add("--n-sampled", type=int, default=d.n_sampled,
        help=f"sampled softmax: negatives drawn per batch [{d.n_sampled}]")
    add("--seed", type=int, default=0, help="seed of split, init and sampling [0]")
    add_device(p, help="torch device [cpu]", default="cpu")


def _load(cfg: dict[str, Any]):
    """(interactions, titles or None, MovieLens or None) from the data options."""
    from ..recsys import data as rdata
    from ..recsys.datasets import DATASETS, load_movielens

    if cfg["dataset"] in DATASETS:
        ml = load_movielens(cfg["dataset"], cfg["max_users"])
        return ml.interactions, ml.titles, ml
    if not Path(cfg["dataset"]).suffix:
        raise UsageError(
            f"--dataset {cfg['dataset']!r} is neither a built-in dataset ({', '.join(DATASETS)}) "
            "nor a file path"
        )
    inter = rdata.from_csv(cfg["dataset"], cfg["user_col"], cfg["item_col"], cfg["rating_col"],
                           cfg["time_col"], cfg["sep"])
    return inter, None, None


def _saved_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A run's saved options, with the names of earlier versions (data, k) brought up to date."""
    cfg = dict(cfg)
    if "data" in cfg:
        cfg.setdefault("dataset", cfg.pop("data"))
    if "k" in cfg:
        cfg.setdefault("top_k", cfg.pop("k"))
    return cfg


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


def _fit_config(cfg: dict[str, Any], quiet: bool, threads: int):
    from ..recsys.train import FitConfig

    names = {f.name for f in fields(FitConfig)}
    extra = {"threads": threads} if "threads" in names else {}
    return FitConfig(**{k: v for k, v in cfg.items() if k in names}, **extra, progress=not quiet)


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


def _evaluate(model, train, test, k: int) -> dict[str, float]:
    from ..recsys.metrics import evaluate

    return evaluate(model, train, test, k=k)


def _recommendation_text(recs: list[dict[str, Any]]) -> str:
    return "\n\n".join(
        f"user {r['user']} (liked e.g. {'; '.join(r['liked_in_train'])}):\n" + "\n".join(
            f"  {n + 1:>2}. {x['title']}" + ("  [in test]" if x["in_test"] else "")
            for n, x in enumerate(r["recommended"]))
        for r in recs)


def run_train(args: argparse.Namespace) -> int:
    cfg = {k: v for k, v in vars(args).items()
           if k not in ("func", "command", "recsys_command", "threads")}
    out = Path(cfg.pop("output") or f"runs/recsys-{time.strftime('%Y%m%d-%H%M%S')}")
    show, quiet = cfg.pop("show_users"), cfg.pop("quiet")
    threads = apply_threads(args)
    fit_config = _fit_config(cfg, quiet, threads).validate()
    split, titles, ml = _prepare(cfg)
    train, test = split
    model = _build_model(cfg, train, ml)
    run = RunDir.create(out, RUN_KIND)
    try:
        _train_into(run, cfg, fit_config, model, split, titles, show)
    except BaseException:
        run.discard()  # nothing half-written: a failed run leaves no directory behind
        raise
    run.close()
    print(f"run directory: {out}")
    return 0


def _train_into(run: RunDir, cfg, fit_config, model, split, titles, show: int) -> None:
    from .. import plots
    from ..recsys.metrics import popularity_scorer
    from ..recsys.train import fit

    train, test = split
    run.write_json("config.json", cfg)
    k = cfg["top_k"]

    def on_epoch(epoch: int, m) -> dict[str, float]:
        r = _evaluate(m, train, test, k)
        return {f"test_precision_at_{k}": r[f"precision_at_{k}"], "test_auc": r["auc"]}

    history = fit(model, train, fit_config, on_epoch=on_epoch)
    final = _evaluate(model, train, test, k)
    baseline = _evaluate(popularity_scorer(train), train, test, k)
    print(f"{train.n_users} users, {train.n_items} items, {len(train)} train / {len(test)} test "
          f"interactions; {final['users']} users evaluated (users without test items excluded)")
    print(_table({cfg["loss"]: final, "popularity": baseline}))
    metrics = {
        "model": final, "popularity": baseline, "history": history,
        "train_seconds": sum(h["seconds"] for h in history),
        "data": {"users": train.n_users, "items": train.n_items, "train": len(train),
                 "test": len(test)},
    }
    run.write_json("metrics.json", metrics)
    plots.plot_curves({
        "train loss": [h["loss"] for h in history],
        f"test Precision@{k}": [h[f"test_precision_at_{k}"] for h in history],
        "test AUC": [h["test_auc"] for h in history],
    }, run.file("curves.png"), title=f"{cfg['loss']} on {Path(cfg['dataset']).name}")
    evaluated = np.flatnonzero(test.user_counts() > 0)[: max(show, 0)]
    recs = _recommendations(model, split, titles, evaluated, k)
    run.write_json("recommendations.json", recs)
    text = _recommendation_text(recs)
    run.write_text("recommendations.txt", text + "\n")
    print(text)
    save_checkpoint(
        {"state_dict": model.state_dict(), "config": cfg,
         "user_ids": [str(u) for u in train.users.ids],
         "item_ids": [str(i) for i in train.items.ids]},
        run.file(MODEL_FILE),
    )


def _load_run(run_dir: str):
    """(config, model on the CPU, split, titles) of a recsys run, checked against its data."""
    run = Path(run_dir)
    check_run(run, RUN_KIND, required=MODEL_FILE)
    try:
        saved = load_checkpoint(run / MODEL_FILE)
        cfg = _saved_config(saved["config"])
        state = saved["state_dict"]
    except (CheckpointError, KeyError, TypeError) as exc:
        raise UsageError(f"{run / MODEL_FILE} is not a usable recsys model: {exc}") from None
    split, titles, ml = _prepare(cfg)
    train, _ = split
    for what, idmap in (("user", train.users), ("item", train.items)):
        known = saved.get(f"{what}_ids")
        ids = [str(i) for i in idmap.ids]
        if known is not None and ids != list(known):
            unknown = [i for i in ids if i not in set(known)]
            detail = (f"{len(unknown)} {what} id(s) unknown to the model (e.g. {unknown[0]!r})"
                      if unknown else f"its {what} ids differ from the model's")
            raise UsageError(
                f"the data of {str(run)!r} ({cfg['dataset']}) has changed since training: "
                f"{detail}; evaluate on the data the model was trained on"
            )
    cfg = {**cfg, "device": "cpu"}
    model = _build_model(cfg, train, ml)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UsageError(
            f"{run / MODEL_FILE} does not fit the run's data ({cfg['dataset']}): {first}"
        ) from None
    return cfg, model, split, titles


def run_evaluate(args: argparse.Namespace) -> int:
    from ..recsys.metrics import popularity_scorer

    apply_threads(args)
    cfg, model, (train, test), _ = _load_run(run_dir_of(args, f"recsys {args.recsys_command}"))
    k = getattr(args, "top_k", None) or cfg["top_k"]
    final = _evaluate(model, train, test, k)
    print(_table({cfg["loss"]: final,
                  "popularity": _evaluate(popularity_scorer(train), train, test, k)}))
    return 0


def run_recommend(args: argparse.Namespace) -> int:
    apply_threads(args)
    if args.n < 1:
        raise UsageError(f"-n must be >= 1, got {args.n}")
    _, model, split, titles = _load_run(run_dir_of(args, f"recsys {args.recsys_command}"))
    train = split[0]
    index = {str(u): i for i, u in enumerate(train.users.ids)}
    if args.user not in index:
        examples = ", ".join(map(str, list(index)[:3]))
        raise UsageError(f"user {args.user!r} is not in the run's data (e.g. {examples})")
    n = min(args.n, train.n_items)
    recs = _recommendations(model, split, titles, np.array([index[args.user]]), n)
    print(_recommendation_text(recs))
    return 0
