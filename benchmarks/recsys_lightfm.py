"""metrickit.recsys against LightFM on MovieLens, on the identical split.

    python -m benchmarks.recsys_lightfm --data movielens-100k movielens-1m --losses warp bpr

Split: all ratings are positives, 10 random test items per user (seed 0), train items excluded
at evaluation. Both sides are evaluated by :func:`metrickit.recsys.evaluate` (on ML-100K it
agrees with LightFM's own ``precision_at_k``/``auc_score`` to 4 decimals). Times are training
seconds only (evaluation excluded). LightFM runs with its defaults (lr 0.05, 10 components) for
10 epochs on ``--threads`` threads; it is skipped when not installed. "Reach" is our cumulative
training time at the first epoch where both our Precision@10 and AUC reach LightFM's final ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from metrickit import recsys

# dim 10 = LightFM's default no_components; batch/lr tuned on ML-100K (see docs/recsys.md)
OURS = {
    "warp": dict(dim=10, batch_size=2048, lr=0.3, epochs=10),
    "bpr": dict(dim=10, batch_size=2048, lr=0.3, epochs=10, n_negatives=3),
}


def run_lightfm(loss, train, test, epochs, threads):
    try:
        from lightfm import LightFM
    except ImportError:
        return None
    model = LightFM(loss=loss, learning_rate=0.05, random_state=0)
    x = train.to_csr().tocoo()
    curve, total = [], 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit_partial(x, epochs=1, num_threads=threads)
        total += time.perf_counter() - start
        ib, iv = model.get_item_representations()
        _, uv = model.get_user_representations()

        def scores(users, uv=uv, iv=iv, ib=ib):
            return torch.as_tensor(uv[users.numpy()] @ iv.T + ib[None, :], dtype=torch.float32)

        m = recsys.evaluate(scores, train, test, k=10)
        curve.append({"seconds": total, "precision@10": m["precision@10"], "auc": m["auc"]})
    return curve


def run_ours(loss, train, test, dim, seed=0, **fit_options):
    torch.manual_seed(seed)
    model = recsys.MatrixFactorization(train.n_users, train.n_items, dim=dim)
    cfg = recsys.FitConfig(loss=loss, seed=seed, progress=False, **fit_options)

    def on_epoch(epoch, m):
        r = recsys.evaluate(m, train, test, k=10)
        return {"precision@10": r["precision@10"], "auc": r["auc"]}

    hist = recsys.fit(model, train, cfg, on_epoch=on_epoch)
    total, curve = 0.0, []
    for h in hist:
        total += h["seconds"]
        curve.append({"seconds": total, "precision@10": h["precision@10"], "auc": h["auc"]})
    return curve


def time_to_reach(curve, target):
    for point in curve:
        if point["precision@10"] >= target["precision@10"] and point["auc"] >= target["auc"]:
            return point["seconds"]
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["movielens-100k"])
    p.add_argument("--losses", nargs="+", default=["warp", "bpr"])
    p.add_argument("--threads", type=int, default=2, help="LightFM threads [2]")
    p.add_argument("--torch-threads", type=int, help="torch threads [--threads]")
    p.add_argument("--epochs", type=int, default=10, help="LightFM epochs [10]")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.torch_threads or args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"torch threads {torch.get_num_threads()}, LightFM threads {args.threads}, "
          f"torch {torch.__version__}")
    results = []
    for name in args.data:
        ml = recsys.load_movielens(name)
        train, test = recsys.random_split(ml.interactions.to_implicit(), n_test=10, seed=0)
        for loss in args.losses:
            lf = run_lightfm(loss, train, test, args.epochs, args.threads)
            ours = run_ours(loss, train, test, **OURS[loss])
            row = {"data": name, "loss": loss, "ours": ours, "lightfm": lf}
            o = ours[-1]
            line = (f"{name:<15} {loss:<5} ours P@10 {o['precision@10']:.4f} AUC {o['auc']:.4f} "
                    f"{o['seconds'] / len(ours) * 1000:6.0f} ms/epoch")
            if lf is not None:
                f = lf[-1]
                reach = time_to_reach(ours, f)
                row["ours_seconds_to_lightfm_quality"] = reach
                row["lightfm_seconds"] = f["seconds"]
                line += (f" | LightFM P@10 {f['precision@10']:.4f} AUC {f['auc']:.4f} "
                         f"{f['seconds'] / len(lf) * 1000:6.0f} ms/epoch, {f['seconds']:.2f} s"
                         f" | ours reach it in "
                         + (f"{reach:.2f} s ({reach / f['seconds']:.2f}x)" if reach else "never"))
            else:
                line += " | LightFM not installed"
            print(line, flush=True)
            results.append(row)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
