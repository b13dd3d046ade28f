"""Multi-process checks on CPU (gloo on 127.0.0.1): the distributed loss and its gradients against
a single process that sees the concatenated batch."""

import datetime
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import metrickit as mk
from metrickit import distributed as mkd

# One global batch of 12 samples, classes spread over the ranks.
LABELS = [0, 1, 2, 0, 1, 3, 2, 0, 3, 1, 2, 3]
SPLITS = {2: [7, 5], 3: [4, 5, 3]}  # unequal local batch sizes
IN_DIM, DIM = 5, 4


def _registered(name, batch_only=False):
    cls = mk.losses.get_loss_class(name)
    if issubclass(cls, mk.losses.ProxyLoss):
        return None if batch_only else (lambda: cls(4, DIM))
    return cls


# Every registered loss at its defaults (losses added later are picked up): global anchors for
# all of them, local anchors for every BatchLoss.
REGISTERED = mk.losses.list_losses()
LOCAL_REGISTERED = [n for n in REGISTERED if _registered(n, batch_only=True) is not None]


def _losses():
    L = mk.losses
    registry = {f"registry:{n}": _registered(n) for n in REGISTERED}
    registry.update({f"local_registry:{n}": _registered(n) for n in LOCAL_REGISTERED})
    return {
        **registry,
        "triplet_all": lambda: L.BatchTripletLoss(margin=0.5),
        "triplet_hard": lambda: L.BatchTripletLoss(margin=0.5, mining="hard"),
        "triplet_semihard": lambda: L.BatchTripletLoss(margin=0.5, mining="semihard"),
        "contrastive": lambda: L.BatchContrastiveLoss(margin=1.5),
        "lifted": lambda: L.LiftedStructureLoss(),
        "npair": lambda: L.BatchNPairLoss(l2_reg=0.01),
        "quadruplet": lambda: L.BatchQuadrupletLoss(),
        "triplet_center": lambda: L.TripletCenterLoss(num_classes=4, embedding_dim=DIM),
        # local anchors, summed: the ranks' terms partition the global sum
        "local_triplet_all_sum": lambda: L.BatchTripletLoss(margin=0.5, reduction="sum"),
        "local_triplet_hard_sum": lambda: L.BatchTripletLoss(mining="hard", reduction="sum"),
        "local_triplet_semihard_sum": lambda: L.BatchTripletLoss(
            mining="semihard", reduction="sum"),
        "local_contrastive_sum": lambda: L.BatchContrastiveLoss(margin=1.5, reduction="sum"),
        # local anchors, means per rank: a different objective, checked against its definition
        "local_lifted": lambda: L.LiftedStructureLoss(),
        "local_triplet_all": lambda: L.BatchTripletLoss(margin=0.5),
        "local_quadruplet": lambda: L.BatchQuadrupletLoss(),
    }


def _inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(len(LABELS), IN_DIM, generator=g, dtype=torch.float64)
    return x, torch.tensor(LABELS)


def _model():
    torch.manual_seed(0)
    return nn.Linear(IN_DIM, DIM).double()


def _loss(name):
    torch.manual_seed(1)  # triplet-center centres
    return _losses()[name]().double()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    assert mkd.init_from_env(timeout=datetime.timedelta(seconds=60))
    assert dist.get_backend() == "gloo"
    try:
        x, y = _inputs()
        sizes = SPLITS[world]
        start = sum(sizes[:rank])
        x, y = x[start : start + sizes[rank]], y[start : start + sizes[rank]]
        results = {"gathered": mkd.all_gather(y), "world": mkd.get_world_size()}
        for name in _losses():
            model = DistributedDataParallel(_model())
            loss_fn = _loss(name)
            anchors = "local" if name.startswith("local") else "global"
            emb = model(x)
            emb.retain_grad()
            loss = mkd.DistributedLoss(loss_fn, anchors=anchors)(emb, y)
            loss.backward()
            extra = [p.grad for p in loss_fn.parameters()]
            mkd.all_reduce_mean_(extra)
            results[name] = {
                "loss": loss.detach(),
                "emb_grad": emb.grad,
                "param_grads": [p.grad for p in model.parameters()],
                "loss_param_grads": extra,
            }
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 3], ids=["world2", "world3"])
def run(request, tmp_path_factory):
    world = request.param
    out = tmp_path_factory.mktemp(f"world{world}")
    mp.spawn(_worker, args=(world, _free_port(), str(out)), nprocs=world, join=True)
    return world, [torch.load(out / f"rank{r}.pt") for r in range(world)]


def _single(name, anchors_of=None):
    """Single-process loss on the concatenated batch, embedding and parameter gradients.

    ``anchors_of``: for the local objective, the list of (offset, size) of every rank; the
    loss is then Σ_r reference_set_loss(rank r's rows, all rows)."""
    x, y = _inputs()
    model, loss_fn = _model(), _loss(name)
    emb = model(x)
    emb.retain_grad()
    if anchors_of is None:
        losses = [loss_fn(emb, y)]
    else:
        losses = [
            mk.F.reference_set_loss(loss_fn, emb[o : o + n], y[o : o + n], emb, y, o)
            for o, n in anchors_of
        ]
    sum(losses).backward()
    return (
        [loss.detach() for loss in losses], emb.grad,
        [p.grad for p in model.parameters()], [p.grad for p in loss_fn.parameters()],
    )


GLOBAL = ["triplet_all", "triplet_hard", "triplet_semihard", "contrastive", "lifted", "npair",
          "quadruplet", "triplet_center"]


@pytest.mark.parametrize("name", GLOBAL + [f"registry:{n}" for n in REGISTERED])
def test_global_loss_and_gradients_equal_single_process(run, name):
    world, ranks = run
    (loss,), emb_grad, param_grads, loss_param_grads = _single(name)
    sizes = SPLITS[world]
    assert loss.item() != 0 or name.startswith("registry")  # the case exercises the loss
    for r, res in enumerate(ranks):
        got = res[name]
        # every rank computes the single-process loss of the global batch
        torch.testing.assert_close(got["loss"], loss, rtol=1e-12, atol=1e-14)
        # the gather's backward sums the W identical copies: W × the single-process gradient
        o = sum(sizes[:r])
        torch.testing.assert_close(got["emb_grad"], world * emb_grad[o : o + sizes[r]])
        # DDP averages over the ranks: exactly the single-process parameter gradient
        for a, b in zip(got["param_grads"], param_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        for a, b in zip(got["loss_param_grads"], loss_param_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["triplet_all_sum", "triplet_hard_sum", "triplet_semihard_sum",
                                  "contrastive_sum"])
def test_local_anchor_sums_partition_the_global_sum(run, name):
    world, ranks = run
    (loss,), emb_grad, param_grads, _ = _single("local_" + name)
    total = sum(res["local_" + name]["loss"] for res in ranks)
    torch.testing.assert_close(total, loss, rtol=1e-12, atol=1e-14)
    sizes = SPLITS[world]
    for r, res in enumerate(ranks):
        got = res["local_" + name]
        o = sum(sizes[:r])
        # Σ_k ∂L_k/∂x_r, including the terms where x_r is another rank's reference
        torch.testing.assert_close(got["emb_grad"], emb_grad[o : o + sizes[r]])
        for a, b in zip(got["param_grads"], param_grads, strict=True):
            torch.testing.assert_close(a, b / world, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "name", ["lifted", "triplet_all", "quadruplet"] + [f"registry:{n}" for n in LOCAL_REGISTERED]
)
def test_local_anchor_means_are_the_documented_objective(run, name):
    world, ranks = run
    sizes = SPLITS[world]
    layout = [(sum(sizes[:r]), n) for r, n in enumerate(sizes)]
    losses, emb_grad, param_grads, _ = _single("local_" + name, layout)
    for r, res in enumerate(ranks):
        got = res["local_" + name]
        o, n = layout[r]
        torch.testing.assert_close(got["loss"], losses[r], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(got["emb_grad"], emb_grad[o : o + n])
        for a, b in zip(got["param_grads"], param_grads, strict=True):
            torch.testing.assert_close(a, b / world, rtol=1e-10, atol=1e-12)
    if name.startswith("registry"):
        return
    # and it is not the global loss (means are per rank)
    (global_loss,), *_ = _single(name)
    assert not torch.allclose(sum(losses) / world, global_loss)


def test_all_gather_concatenates_unequal_batches_in_rank_order(run):
    world, ranks = run
    for res in ranks:
        assert res["world"] == world
        assert res["gathered"].tolist() == LABELS


def test_without_process_group_everything_is_the_identity():
    assert not mkd.is_distributed() and mkd.get_rank() == 0 and mkd.get_world_size() == 1
    assert mkd.is_main_process() and not mkd.init_from_env()
    x = torch.randn(5, 3, requires_grad=True)
    g, offset = mkd.all_gather_with_grad(x)
    assert g is x and offset == 0 and mkd.all_gather(x) is x
    y = torch.tensor([0, 0, 1, 1, 2])
    loss = mk.losses.BatchTripletLoss()
    torch.testing.assert_close(mkd.DistributedLoss(loss, anchors="local")(x, y), loss(x, y))
    t = torch.ones(2)
    mkd.all_reduce_mean_([t])
    assert torch.equal(t, torch.ones(2))


# ----------------------------------------------------------------------- distributed sampler
SAMPLER_LABELS = np.repeat(np.arange(10), [5, 6, 4, 7, 5, 5, 6, 4, 5, 8])


@pytest.mark.parametrize("world", [2, 3])
def test_sampler_splits_one_global_pk_stream(world):
    samplers = [
        mkd.DistributedPKSampler(SAMPLER_LABELS, p=3, k=2, seed=5, rank=r, world_size=world)
        for r in range(world)
    ]
    single = mk.samplers.PKSampler(SAMPLER_LABELS, p=3 * world, k=2, seed=5,
                                   num_batches=len(samplers[0]))
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for s in samplers:
            s.set_epoch(epoch)
        for step, (whole, *parts) in enumerate(zip(single, *samplers, strict=True)):
            assert sum(parts, []) == whole
            assert all(len(p) == 6 for p in parts)
            classes = [set(SAMPLER_LABELS[p]) for p in parts]
            assert all(len(c) == 3 for c in classes)
            assert len(set().union(*classes)) == 3 * world, step  # disjoint classes
            assert len(set(whole)) == len(whole)  # no sample twice in a global step
    assert len(samplers[0]) == len(SAMPLER_LABELS) // (6 * world)
    a = list(samplers[0])
    samplers[0].set_epoch(2)
    assert list(samplers[0]) != a


def test_sampler_bad_inputs():
    with pytest.raises(ValueError, match="needs 12 distinct classes per global step.*only 10"):
        mkd.DistributedPKSampler(SAMPLER_LABELS, p=4, k=2, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank must be an integer in \\[0, 2\\), got 2"):
        mkd.DistributedPKSampler(SAMPLER_LABELS, p=2, k=2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size must be a positive integer"):
        mkd.DistributedPKSampler(SAMPLER_LABELS, p=2, k=2, rank=0, world_size=0)
    with pytest.raises(ValueError, match="anchors must be one of"):
        mkd.DistributedLoss(mk.losses.BatchTripletLoss(), anchors="everything")


# ------------------------------------------------------------------ metrickit train, 2 processes
def test_two_process_train_completes_checkpoints_resumes_and_reports(tmp_path):
    import json
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    flags = ["--dataset", "digits", "--model", "mlp", "--embedding-dim", "16", "-P", "3",
             "-K", "4", "--batches-per-epoch", "3", "--device", "cpu", "--quiet"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
              "--nproc_per_node=2", "-m", "metrickit", "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def train(*argv):
        done = subprocess.run([*launch, *argv], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    out = train(*flags, "--epochs", "1", "-o", str(run_dir))
    assert out.count("elapsed:") == 1  # rank 0 alone reports
    assert (run_dir / "checkpoints" / "last.pt").exists() and (run_dir / "report.html").exists()
    first = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert first["epoch"] == 1
    out = train("--resume", str(run_dir), "--epochs", "2", "--quiet")
    assert out.count("elapsed:") == 1
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert last["epoch"] == 2 and len(last["history"]) == 2
    assert last["history"][0] == first["history"][0]  # resumed, not retrained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"trained", "untrained", "raw"} <= set(metrics)
