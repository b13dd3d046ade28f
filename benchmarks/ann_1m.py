"""Nearest-neighbour search on 1M × 128 embeddings: build time, search time and recall of the
exact flat index, IVF and HNSW (:mod:`metrickit.evaluation.ann`, faiss on the CPU).

    .venv/bin/python benchmarks/ann_1m.py              # 1M references, 5k queries, k = 10
    .venv/bin/python benchmarks/ann_1m.py --n 100000   # a quicker run

Data: seeded synthetic embeddings, ``--classes`` Gaussian clusters (unit-variance noise around
centres drawn N(0, 1) per coordinate, so clusters overlap), float32; the queries are fresh
draws of the same mixture (not in the index). Recall@k is measured against the exact flat
search of the same queries. "mining all" extrapolates the search throughput to one query per
reference (offline mining of the whole set). Timings are wall-clock on the machine as it is
(note its cores and load); the table is printed in Markdown.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from metrickit.evaluation.ann import ANNIndex, recall_at_k


def make_data(n: int, q: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    centres = g.standard_normal((classes, dim), dtype=np.float32)

    def draw(m: int) -> np.ndarray:
        x = g.standard_normal((m, dim), dtype=np.float32)
        x += centres[g.integers(0, classes, size=m)]
        return x

    return draw(n), draw(q)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    ref, query = make_data(args.n, args.queries, args.dim, args.classes, args.seed)
    print(f"# {args.n:,} × {args.dim} references, {args.queries:,} queries, k = {args.k}, "
          f"{args.threads} threads, faiss {faiss.__version__}, load {os.getloadavg()[0]:.1f}")

    rows = []
    flat, build = timed(lambda: ANNIndex(ref, index="flat"))
    (_, exact), search = timed(lambda: flat.search(query, k=args.k))
    rows.append(("flat (exact)", "", build, search, 1.0))

    nlist = max(1, int(np.sqrt(args.n)))
    ivf, build = timed(lambda: ANNIndex(ref, index="ivf", nlist=nlist, seed=args.seed))
    for nprobe in (8, 32, 128):
        ivf.nprobe = nprobe
        (_, idx), search = timed(lambda ivf=ivf: ivf.search(query, k=args.k))
        rows.append(("ivf", f"nlist={ivf.nlist} nprobe={nprobe}", build, search,
                     recall_at_k(idx, exact)))
        build = float("nan")  # built once

    hnsw, build = timed(lambda: ANNIndex(ref, index="hnsw", hnsw_m=16, ef_construction=64))
    for ef in (32, 64, 128):
        hnsw.ef_search = ef
        (_, idx), search = timed(lambda hnsw=hnsw: hnsw.search(query, k=args.k))
        rows.append(("hnsw", f"M=16 efC=64 efSearch={ef}", build, search,
                     recall_at_k(idx, exact)))
        build = float("nan")

    print("\n| index | parameters | build (s) | search (s) | queries/s | mining all (s) | "
          f"recall@{args.k} |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, params, build, search, recall in rows:
        qps = args.queries / search
        built = "" if np.isnan(build) else f"{build:.1f}"
        print(f"| {name} | {params} | {built} | {search:.2f} | {qps:,.0f} | "
              f"{args.n / qps:,.0f} | {recall:.4f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak resident memory: {peak:.1f} GiB")


if __name__ == "__main__":
    main()
