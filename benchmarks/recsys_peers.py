"""metrickit.recsys against LightFM and implicit on MovieLens, on identical splits.

    python -m benchmarks.recsys_peers --data movielens-100k movielens-1m --splits random temporal \
        --dims 10 32 64 --cells-dir runs/recsys-bench          # resumable: one JSON per cell
    python -m benchmarks.recsys_peers --cells-dir runs/recsys-bench --report   # markdown tables

Splits (all ratings are positives): ``random`` = 10 random test items per user (split seed 0);
``temporal`` = each user's 5 latest items (leave-last-5-out). Every method is evaluated after
each epoch by :func:`metrickit.recsys.evaluate` over the full catalogue with train items
excluded (on ML-100K it agrees with LightFM's own metrics to 4 decimals); times are training
seconds only. Peers: LightFM 1.17 (lr 0.05, its other defaults, 30 epochs) and implicit 0.7
(ALS 15 iterations and BPR 100 iterations, defaults, evaluated every 1 / 5 iterations), each on
``--threads`` threads; ours (:class:`~metrickit.recsys.FitConfig` defaults for the dimension) on
``--threads`` torch threads. A peer that is not installed is skipped. "best" is the best test
Precision@10 over the evaluated epochs (with the AUC of that epoch); "reach" is the training time
until a method first attains LightFM WARP's best Precision@10. ``--seeds 0 1 2`` repeats every
cell with each seed (ours: the init's ``torch.manual_seed`` and ``FitConfig.seed``; LightFM and
implicit: ``random_state``; the split stays the same); ``--report`` then adds the WARP cells'
means over the seeds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from metrickit import recsys
from metrickit.recsys.train import ENGINES, resolve_engine

SPLITS = ("random", "temporal")
METHODS = ("ours-warp", "ours-bpr", "ours-warp-kos", "lightfm-warp", "lightfm-bpr",
           "lightfm-warp-kos", "implicit-als", "implicit-bpr")
DEFAULT_METHODS = ("ours-warp", "ours-bpr", "lightfm-warp", "lightfm-bpr", "implicit-als",
                   "implicit-bpr")
LIGHTFM_EPOCHS = 30


def make_split(name: str, split: str) -> recsys.Split:
    data = recsys.load_movielens(name).interactions.to_implicit()
    if split == "random":
        return recsys.random_split(data, n_test=10, seed=0)
    return recsys.leave_last_out(data, n_test=5)


def _scorer(user_vectors: np.ndarray, item_vectors: np.ndarray, item_bias: np.ndarray | None):
    uv = torch.as_tensor(np.ascontiguousarray(user_vectors), dtype=torch.float32)
    iv = torch.as_tensor(np.ascontiguousarray(item_vectors), dtype=torch.float32)
    ib = None if item_bias is None else torch.as_tensor(item_bias, dtype=torch.float32)

    def scores(users: torch.Tensor) -> torch.Tensor:
        s = uv[users] @ iv.T
        return s if ib is None else s + ib[None, :]

    return scores


def _point(epoch: int, seconds: float, scores, train, test) -> dict[str, float]:
    m = recsys.evaluate(scores, train, test, k=10)
    return {"epoch": epoch, "seconds": seconds, "precision_at_10": m["precision_at_10"],
            "auc": m["auc"], "ndcg_at_10": m["ndcg_at_10"]}


def run_lightfm(loss: str, split, dim: int, threads: int, every: int = 1, seed: int = 0
                 ) -> list[dict] | None:
    try:
        from lightfm import LightFM
    except ImportError:
        return None
    train, test = split
    model = LightFM(no_components=dim, loss=loss, learning_rate=0.05, random_state=seed)
    x = train.to_csr().tocoo()
    curve, total = [], 0.0
    for epoch in range(1, LIGHTFM_EPOCHS + 1):
        start = time.perf_counter()
        model.fit_partial(x, epochs=1, num_threads=threads)
        total += time.perf_counter() - start
        if epoch % every and epoch != LIGHTFM_EPOCHS:
            continue
        ib, iv = model.get_item_representations()
        _, uv = model.get_user_representations()
        curve.append(_point(epoch, total, _scorer(uv, iv, ib), train, test))
    return curve


def run_implicit(kind: str, split, dim: int, threads: int, every: int = 1, seed: int = 0
                 ) -> list[dict] | None:
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError:
        return None
    train, test = split
    x = train.to_csr().astype(np.float32)
    if kind == "als":
        model = AlternatingLeastSquares(factors=dim, num_threads=threads, random_state=seed)
        total_iters, every = 15, every
    else:
        model = BayesianPersonalizedRanking(factors=dim, num_threads=threads, random_state=seed)
        total_iters, every = 100, 5 * every
    curve, total = [], 0.0
    for done in range(every, total_iters + 1, every):
        model.iterations = every  # fit() continues from the current factors
        start = time.perf_counter()
        model.fit(x, show_progress=False)
        total += time.perf_counter() - start
        curve.append(_point(done, total, _scorer(model.user_factors, model.item_factors, None),
                            train, test))
    return curve


def ours_config(loss: str, threads: int, epochs: int = LIGHTFM_EPOCHS, seed: int = 0
                ) -> recsys.FitConfig:
    """Our library defaults; only the epochs (LightFM's 30), seed, bar and threads are set."""
    return recsys.FitConfig(loss=loss, epochs=epochs, seed=seed, progress=False, threads=threads)


def run_ours(loss: str, split, dim: int, threads: int, every: int = 1,
             epochs: int = LIGHTFM_EPOCHS, seed: int = 0) -> tuple[list[dict], dict]:
    train, test = split
    torch.manual_seed(seed)
    model = recsys.MatrixFactorization(train.n_users, train.n_items, dim=dim)
    cfg = ours_config(loss, threads, epochs, seed)

    def on_epoch(epoch, m):
        if epoch % every and epoch != cfg.epochs:
            return None
        r = recsys.evaluate(m, train, test, k=10)
        return {key: r[key] for key in ("precision_at_10", "auc", "ndcg_at_10")}

    hist = recsys.fit(model, train, cfg, on_epoch=on_epoch)
    total, curve = 0.0, []
    for h in hist:
        total += h["seconds"]
        if "auc" not in h:
            continue
        curve.append({"epoch": h["epoch"], "seconds": total,
                      **{key: h[key] for key in ("precision_at_10", "auc", "ndcg_at_10")}})
    return curve, cfg.to_dict()


def run_cell(method: str, split, dim: int, threads: int, every: int = 1,
             ours_epochs: int = LIGHTFM_EPOCHS, seed: int = 0) -> dict | None:
    """One method on one split and dimension, evaluated every ``every`` epochs (and last)."""
    side, _, loss = method.partition("-")
    config: dict = {}
    if side == "ours":
        curve, config = run_ours(loss.replace("-", "_"), split, dim, threads, every,
                                 ours_epochs, seed)
    elif side == "lightfm":
        curve = run_lightfm(loss, split, dim, threads, every, seed)
    else:
        curve = run_implicit(loss, split, dim, threads, every, seed)
    if curve is None:
        return None
    best = max(curve, key=lambda p: p["precision_at_10"])
    return {"curve": curve, "best": best, "final": curve[-1], "config": config,
            "epoch_seconds": curve[-1]["seconds"] / curve[-1]["epoch"]}


def machine() -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()[0],
            "torch": torch.__version__}


def time_to_reach(curve: list[dict], target: float, key: str = "seconds") -> float | None:
    """Training seconds (or epochs, ``key="epoch"``) until Precision@10 first reaches target."""
    for p in curve:
        if p["precision_at_10"] >= target:
            return p[key]
    return None


def epoch_speed(name: str, dims: list[int], losses: list[str], reps: int = 3,
                engine: str = "auto") -> list[dict]:
    """Per-epoch CPU seconds (process time, so a shared machine's load inflates it little) of
    LightFM and ours, 1 thread each, on the same random split, epochs interleaved: one fit of
    ours runs ``reps`` + 1 epochs and its ``on_epoch`` runs one LightFM epoch. The first epoch
    of each (setup, compilation) is left out; the figure is the median of the others."""
    from lightfm import LightFM

    train, _ = make_split(name, "random")
    x = train.to_csr().tocoo()
    rows = []
    torch.set_num_threads(1)
    for dim in dims:
        for loss in losses:
            lfm = LightFM(no_components=dim, loss=loss, learning_rate=0.05, random_state=0)
            torch.manual_seed(0)
            model = recsys.MatrixFactorization(train.n_users, train.n_items, dim=dim)
            cfg = ours_config(loss, threads=1, epochs=reps + 1)
            cfg.engine = engine
            times: dict[str, list[float]] = {"lightfm": [], "ours": []}
            mark = [time.process_time()]

            def on_epoch(epoch, _model, times=times, mark=mark, lfm=lfm):
                times["ours"].append(time.process_time() - mark[0])
                c = time.process_time()
                lfm.fit_partial(x, epochs=1, num_threads=1)
                times["lightfm"].append(time.process_time() - c)
                mark[0] = time.process_time()

            recsys.fit(model, train, cfg, on_epoch=on_epoch)
            row = {"data": name, "dim": dim, "loss": loss, "load": os.getloadavg()[0],
                   "engine": resolve_engine(model, cfg),
                   **{k: float(np.median(v[1:])) for k, v in times.items()}}
            print(f"{name} dim {dim:>2} {loss} ({row['engine']}): CPU s/epoch ours "
                  f"{row['ours']:.3f}, LightFM {row['lightfm']:.3f} "
                  f"({row['ours'] / row['lightfm']:.2f}x), load {row['load']:.1f}", flush=True)
            rows.append(row)
    return rows


def _targets(cells: dict[tuple, dict], key: tuple, speed: dict[tuple, dict]) -> list[str]:
    """Met / not met (with the figures) of the issue's targets for one data × split × dim."""
    get = {m: cells.get((*key, m)) for m in METHODS}
    ours, lfm = get["ours-warp"], get["lightfm-warp"]

    def mark(ok: bool, text: str) -> str:
        return f"{'met' if ok else 'NOT met'} ({text})"

    out = []
    if ours and lfm:
        a, b = ours["best"], lfm["best"]
        out.append(mark(a["precision_at_10"] >= b["precision_at_10"],
                        f"{a['precision_at_10']:.4f} vs {b['precision_at_10']:.4f}"))
        out.append(mark(a["auc"] >= b["auc"] - 0.005, f"{a['auc']:.4f} vs {b['auc']:.4f}"))
    else:
        out += ["—", "—"]
    bpr = get["ours-bpr"]
    peers = [get[m] for m in ("lightfm-bpr", "implicit-bpr") if get[m]]
    if bpr and peers:
        best_peer = max(c["best"]["precision_at_10"] for c in peers)
        out.append(mark(bpr["best"]["precision_at_10"] >= best_peer,
                        f"{bpr['best']['precision_at_10']:.4f} vs {best_peer:.4f}"))
    else:
        out.append("—")
    rate = speed.get((key[0], key[2], "warp"))
    if ours and lfm and rate:
        target = lfm["best"]["precision_at_10"]
        mine = time_to_reach(ours["curve"], target, "epoch")
        theirs = time_to_reach(lfm["curve"], target, "epoch")
        mine_s = None if mine is None else mine * rate["ours"]
        out.append(mark(mine_s is not None and mine_s <= theirs * rate["lightfm"],
                        f"{'never' if mine is None else f'{mine} ep. ≈ {mine_s:.1f}'} vs "
                        f"{theirs} ep. ≈ {theirs * rate['lightfm']:.1f} CPU s"))
    else:
        out.append("—")
    return out


def _mean_mark(mine: list[float], theirs: list[float], slack: float = 0.0) -> str:
    a, b = float(np.mean(mine)), float(np.mean(theirs))
    return f"{'met' if a >= b - slack else 'NOT met'} ({round(a - b, 4) + 0.0:+.4f})"  # no -0


def seed_table(by_seed: dict[tuple, dict[int, dict]]) -> list[str]:
    """Markdown rows: ours and LightFM WARP's best P@10 and AUC per seed and their means over
    the seeds both ran, with the P@10 and AUC targets judged on the means."""
    keys = sorted({k[:3] for k, runs in by_seed.items() if k[3] == "ours-warp" and len(runs) > 1})
    lines = ["", "WARP over seeds: mean of each seed's best P@10 and of the AUC at that epoch "
             "(per seed in brackets); targets judged on the means", "",
             "| data | split | dim | seeds | ours P@10 | LightFM P@10 | ours AUC | LightFM AUC "
             "| P@10 target | AUC target |", "|" + " --- |" * 10]
    rows = 0
    for k in keys:
        ours, lfm = by_seed[(*k, "ours-warp")], by_seed.get((*k, "lightfm-warp"), {})
        seeds = sorted(set(ours) & set(lfm))
        if len(seeds) < 2:
            continue
        col = {(side, key): [runs[s]["best"][key] for s in seeds]
               for side, runs in (("ours", ours), ("lfm", lfm))
               for key in ("precision_at_10", "auc")}
        cells = [f"{np.mean(v):.4f} ({', '.join(f'{x:.4f}' for x in v)})"
                 for v in (col["ours", "precision_at_10"], col["lfm", "precision_at_10"],
                           col["ours", "auc"], col["lfm", "auc"])]
        p10 = _mean_mark(col["ours", "precision_at_10"], col["lfm", "precision_at_10"])
        auc = _mean_mark(col["ours", "auc"], col["lfm", "auc"], 0.005)
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {', '.join(map(str, seeds))} | "
                     + " | ".join(cells) + f" | {p10} | {auc} |")
        rows += 1
    return lines if rows else []


def report(cells_dir: Path, speed_file: Path | None = None) -> str:
    """Markdown tables (one row per data × split × dim) from the cached cells of seed 0, the
    per-epoch CPU times of a ``--speed`` run (its ``speed.json``) when given, and the WARP
    cells' means over the seeds when cells of several seeds are there."""
    speed: dict[tuple, dict] = {}
    if speed_file is not None and speed_file.is_file():
        speed = {(r["data"], r["dim"], r["loss"]): r for r in json.loads(speed_file.read_text())}
    cells: dict[tuple, dict] = {}
    by_seed: dict[tuple, dict[int, dict]] = {}
    for f in sorted(cells_dir.glob("*.json")):
        if f.name == "speed.json":
            continue
        c = json.loads(f.read_text())
        key = (c["data"], c["split"], c["dim"], c["method"])
        by_seed.setdefault(key, {})[c.get("seed", 0)] = c
        if c.get("seed", 0) == 0:
            cells[key] = c
    keys = sorted({k[:3] for k in cells}, key=lambda k: (k[0], k[1], k[2]))
    methods = [m for m in METHODS if any(k[3] == m for k in cells)]
    head = "| data | split | dim | " + " | ".join(methods) + " |"
    lines = ["best P@10 / AUC at that epoch (epoch)", "", head,
             "|" + " --- |" * (3 + len(methods))]
    for k in keys:
        row = []
        for m in methods:
            c = cells.get((*k, m))
            row.append("—" if c is None else
                       f"{c['best']['precision_at_10']:.4f} / {c['best']['auc']:.4f} "
                       f"({c['best']['epoch']})")
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(row) + " |")
    lines += ["", "seconds per epoch (per iteration for implicit); reach = seconds to LightFM "
              "WARP's best P@10", "", head, "|" + " --- |" * (3 + len(methods))]
    for k in keys:
        target = cells.get((*k, "lightfm-warp"))
        row = []
        for m in methods:
            c = cells.get((*k, m))
            if c is None:
                row.append("—")
                continue
            text = f"{c['epoch_seconds']:.2f}"
            if target is not None:
                reach = time_to_reach(c["curve"], target["best"]["precision_at_10"])
                text += f", reach {'never' if reach is None else f'{reach:.1f}'}"
            row.append(text)
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(row) + " |")
    lines += ["", "targets at seed 0: WARP P@10 ≥ LightFM WARP's best; WARP AUC ≥ LightFM's − "
              "0.005; BPR P@10 ≥ LightFM BPR's and implicit BPR's; reach = epochs to LightFM "
              "WARP's best P@10 × CPU seconds per epoch (interleaved `--speed` run), ours vs "
              "LightFM", "",
              "| data | split | dim | WARP P@10 | WARP AUC | BPR P@10 | reach |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for k in keys:
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(_targets(cells, k, speed))
                     + " |")
    loads = sorted(c["machine"]["load"] for c in cells.values())
    if loads:
        lines += ["", f"{len(cells)} cells; load average during the cells "
                  f"{loads[0]:.1f}–{loads[-1]:.1f}"]
    return "\n".join(lines + seed_table(by_seed))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["movielens-100k"])
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    p.add_argument("--dims", nargs="+", type=int, default=[10, 32, 64])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    p.add_argument("--threads", type=int, default=1, help="threads of every method [1]")
    p.add_argument("--eval-every", type=int, default=1,
                   help="evaluate every N epochs (implicit BPR: 5N iterations) and last [1]")
    p.add_argument("--ours-epochs", type=int, default=LIGHTFM_EPOCHS,
                   help=f"epochs of ours [{LIGHTFM_EPOCHS}, as LightFM]")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="run every cell with each of these seeds (same split) [0]")
    p.add_argument("--cells-dir", default="runs/recsys-bench", help="one JSON per cell")
    p.add_argument("--redo", action="store_true", help="recompute cells already there")
    p.add_argument("--report", action="store_true", help="print the tables of the cells only")
    p.add_argument("--speed-file", help="--report: speed.json of a --speed run")
    p.add_argument("--speed", action="store_true",
                   help="only per-epoch CPU time of ours vs LightFM, interleaved, 1 thread")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="--speed: our training engine [auto]")
    args = p.parse_args(argv)
    cells_dir = Path(args.cells_dir)
    if args.speed:
        rows = [r for name in args.data
                for r in epoch_speed(name, args.dims, ["warp", "bpr"], engine=args.engine)]
        cells_dir.mkdir(parents=True, exist_ok=True)
        (cells_dir / "speed.json").write_text(json.dumps(rows, indent=1))
        return 0
    if args.report:
        print(report(cells_dir, Path(args.speed_file) if args.speed_file else None))
        return 0
    cells_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    for name in args.data:
        for split_name in args.splits:
            split = make_split(name, split_name)
            for dim, seed, method in itertools.product(args.dims, args.seeds, args.methods):
                tail = f"_seed{seed}" if seed else ""
                path = cells_dir / f"{name}_{split_name}_{dim}_{method}{tail}.json"
                if path.exists() and not args.redo:
                    continue
                info = machine()
                cell = run_cell(method, split, dim, args.threads, args.eval_every,
                                args.ours_epochs, seed)
                if cell is None:
                    print(f"{name} {split_name} {dim} {method}: not installed", flush=True)
                    continue
                cell.update(data=name, split=split_name, dim=dim, method=method, seed=seed,
                            threads=args.threads, eval_every=args.eval_every, machine=info)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(cell, indent=1, default=float))
                tmp.replace(path)
                b = cell["best"]
                print(f"{name} {split_name} {dim:>3} {method:<16} seed {seed} best P@10 "
                      f"{b['precision_at_10']:.4f} AUC {b['auc']:.4f} (epoch {b['epoch']}), "
                      f"{cell['epoch_seconds']:.2f} s/epoch, load {info['load']:.1f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
