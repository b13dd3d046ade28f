import inspect
import itertools

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from threadpoolctl import threadpool_limits
from torch import nn

import metrickit as mk
from metrickit import plots
from reference import contrastive_pairs, euclid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_side=100):
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side
        im.verify()
    return path


@pytest.fixture(autouse=True, scope="module")
def one_openmp_thread():
    # sklearn's t-SNE spins OpenMP threads; on a loaded shared CPU that costs ~100x (30 s vs 0.3 s)
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    yield
    assert plt.get_fignums() == []  # nothing leaks into pyplot's global state


class BruteTripletLoss(nn.Module):
    """Mean of max(0, m + d(a,p) − d(a,n)) over every valid triplet, by plain loops."""

    def __init__(self, margin=1.0):
        super().__init__()
        self.margin = margin

    def forward(self, emb, labels):
        terms = []
        for a, p, n in itertools.permutations(range(len(labels)), 3):
            if labels[a] == labels[p] and labels[a] != labels[n]:
                dap, dan = (emb[a] - emb[p]).norm(), (emb[a] - emb[n]).norm()
                terms.append(torch.clamp(self.margin + dap - dan, min=0))
        return torch.stack(terms).mean() if terms else emb.sum() * 0


class ConstantLoss(nn.Module):
    def forward(self, emb, labels):
        return emb.sum() * 0 + 1.0


# ---- loss curve ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps, epochs",
    [
        (np.exp(-np.arange(200) / 50) + 0.05, np.linspace(1, 0.1, 5)),  # typical
        (torch.tensor([0.7]), torch.tensor([0.7])),  # a single step
        (np.full(40, 2.0), np.full(4, 2.0)),  # constant
        ([], [3.0, 2.0, 1.0]),  # epochs only
        (np.logspace(3, -3, 60), []),  # log scale, no epoch values
        (torch.rand(25, dtype=torch.bfloat16), torch.rand(5, dtype=torch.float16)),
    ],
)
def test_loss_curve_writes_png(tmp_path, steps, epochs):
    out = plots.plot_loss_curve(steps, epochs, tmp_path / "sub" / "loss.png", title="run")
    assert out == tmp_path / "sub" / "loss.png"
    assert_png(out)


def test_loss_curve_rejects_nothing_and_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="both empty"):
        plots.plot_loss_curve([], [], tmp_path / "x.png")
    with pytest.raises(ValueError, match="step_losses must be 1-D"):
        plots.plot_loss_curve(np.ones((3, 2)), [1.0], tmp_path / "x.png")


@pytest.mark.parametrize(
    "steps, at, scores",
    [
        (np.exp(-np.arange(360) / 90), [0, 100, 200, 360], {"dev spearman": [82, 85, 86, 86.5]}),
        ([0.5], [0, 1], {"dev spearman": [10.0, np.nan], "dev pearson": [9.0, 11.0]}),
        (np.logspace(2, -2, 30), [30], {"score": torch.tensor([0.3])}),
    ],
)
def test_eval_curve_writes_png(tmp_path, steps, at, scores):
    assert_png(plots.plot_eval_curve(steps, at, scores, tmp_path / "curve.png", title="run"))


def test_eval_curve_rejects_mismatched_scores(tmp_path):
    with pytest.raises(ValueError, match="scores is empty"):
        plots.plot_eval_curve([1.0], [1], {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"scores\['dev'\] has 2 values for 3 eval_steps"):
        plots.plot_eval_curve([1.0], [0, 1, 2], {"dev": [1.0, 2.0]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_smoothing_is_a_trailing_mean_skipping_nans():
    y = np.array([1.0, 3.0, np.nan, 5.0, 7.0, 9.0])
    want = []
    for i in range(len(y)):
        window = [v for v in y[max(0, i - 2) : i + 1] if not np.isnan(v)]
        want.append(sum(window) / len(window))
    np.testing.assert_allclose(plots._smooth(y, 3), want)


# ---- loss against distance ----------------------------------------------------------------


@pytest.mark.parametrize("margin", [1.0, 0.5, 2.0])
def test_contrastive_curves_match_the_formula(margin):
    curves = plots.loss_distance_curves("contrastive", margin=margin, num=41)
    assert set(curves) == {"similar", "dissimilar"}
    d = curves["similar"].x
    assert d[0] == 0 and d[-1] == pytest.approx(2.5 * margin) and d.size == 41
    origin = np.zeros((1, 3))
    for key, y in (("similar", 1), ("dissimilar", 0)):
        ref = [contrastive_pairs(origin, [[v, 0, 0]], [y], margin)[0] for v in d]
        np.testing.assert_allclose(curves[key].y, ref, rtol=1e-6, atol=1e-9)
    # the seed's picture: dissimilar reaches 0 exactly at the margin
    assert curves["dissimilar"].y[d >= margin].max() == 0
    assert curves["dissimilar"].y[d < margin].min() > 0


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_module_input_and_per_element_reductions(reduction):
    module = mk.losses.get_loss("contrastive", margin=1.5, reduction=reduction)
    curves = plots.loss_distance_curves(module, max_distance=3.0, num=31)
    d = curves["similar"].x
    np.testing.assert_allclose(curves["similar"].y, 0.5 * d**2, rtol=1e-6)
    np.testing.assert_allclose(curves["dissimilar"].y, 0.5 * np.maximum(1.5 - d, 0) ** 2, atol=1e-7)


@pytest.mark.parametrize("margin", [1.0, 0.3])
def test_triplet_probe_gives_the_hinge_curves(margin):
    curves = plots.loss_distance_curves(BruteTripletLoss(margin), max_distance=3.0, num=61)
    assert set(curves) == {"anchor_positive", "anchor_negative"}
    ap, an = curves["anchor_positive"], curves["anchor_negative"]
    fixed_an, fixed_ap = 1.5, min(margin, 3.0) / 2
    assert f"{fixed_an:.3g}" in ap.label and f"{fixed_ap:.3g}" in an.label
    np.testing.assert_allclose(ap.x, np.linspace(0, 3.0, 61))
    np.testing.assert_allclose(ap.y, np.maximum(0, margin + ap.x - fixed_an), atol=1e-6)
    assert an.x[0] == pytest.approx(fixed_ap / 2) and an.x[-1] == pytest.approx(3.0)
    np.testing.assert_allclose(an.y, np.maximum(0, margin + fixed_ap - an.x), atol=1e-6)


def test_triplet_points_have_the_requested_distances():
    d_ap, d_an = np.array([0.0, 0.4, 2.0]), np.array([1.0, 0.2, 1.0])
    pts = plots._triplet_points(d_ap, d_an).numpy()
    for (a, p, n), want_ap, want_an in zip(pts, d_ap, d_an, strict=True):
        assert euclid(a, p) == pytest.approx(want_ap)
        assert euclid(a, n) == pytest.approx(want_an) == pytest.approx(euclid(p, n))


def required_params(name):
    """Sizes (num_classes, embedding_dim, ...) a registered loss cannot be built without."""
    sig = inspect.signature(mk.losses._registry.LOSSES[name].__init__)
    return {
        p.name: 2
        for p in list(sig.parameters.values())[1:]
        if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    }


@pytest.mark.parametrize("name", mk.losses.list_losses())
def test_every_registered_loss_is_drawn_or_refused_clearly(name, tmp_path):
    params = required_params(name)
    try:
        curves = plots.loss_distance_curves(name, num=21, **params)
    except ValueError as err:
        assert name in str(err) and "cannot draw" in str(err)
        return
    assert len(curves) == 2
    assert all(np.isfinite(c.y).all() and c.x.shape == c.y.shape for c in curves.values())
    assert all(np.ptp(c.y) > 0 for c in curves.values())  # each curve shows something
    assert_png(plots.plot_loss_vs_distance(name, tmp_path / f"{name}.png", **params))


def test_plot_loss_vs_distance_writes_png(tmp_path):
    assert_png(plots.plot_loss_vs_distance("contrastive", tmp_path / "c.png", margin=0.8))
    assert_png(plots.plot_loss_vs_distance(BruteTripletLoss(0.5), tmp_path / "t.png"))
    pair = plots.plot_loss_vs_distance("contrastive", tmp_path / "p.png", probe="triplet")
    assert_png(pair)


def test_loss_vs_distance_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        plots.loss_distance_curves("nope")
    with pytest.raises(ValueError, match="margin and loss parameters apply only"):
        plots.loss_distance_curves(BruteTripletLoss(), margin=0.5)
    with pytest.raises(ValueError, match="learnable parameters"):
        plots.loss_distance_curves(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="distance='cosine'"):
        plots.loss_distance_curves("contrastive", distance="cosine")
    with pytest.raises(ValueError, match="cannot draw loss 'ConstantLoss'.*constant"):
        plots.plot_loss_vs_distance(ConstantLoss(), tmp_path / "x.png")
    with pytest.raises(ValueError, match="probe"):
        plots.loss_distance_curves("contrastive", probe="quad")
    with pytest.raises(ValueError, match="max_distance"):
        plots.loss_distance_curves("contrastive", max_distance=-1.0)
    with pytest.raises(TypeError, match="loss must be"):
        plots.loss_distance_curves(3)
    assert not (tmp_path / "x.png").exists()


# ---- pair distances -----------------------------------------------------------------------


def brute_pair_distances(emb, labels):
    pos, neg = [], []
    for i in range(len(emb)):
        for j in range(i + 1, len(emb)):
            (pos if labels[i] == labels[j] else neg).append(euclid(emb[i], emb[j]))
    return np.array(pos), np.array(neg)


@pytest.mark.parametrize("as_torch", [False, True])
def test_pair_distances_exact_when_small(layout, as_torch):
    emb = np.random.default_rng(0).normal(size=(len(layout), 5))
    e, lab = (torch.tensor(emb), torch.tensor(layout)) if as_torch else (emb, layout)
    pos, neg = plots.pair_distances(e, lab)
    ref_pos, ref_neg = brute_pair_distances(emb, layout)
    np.testing.assert_allclose(np.sort(pos), np.sort(ref_pos), rtol=1e-9)
    np.testing.assert_allclose(np.sort(neg), np.sort(ref_neg), rtol=1e-9)


def test_pair_distances_sampled_are_genuine_pairs():
    g = np.random.default_rng(1)
    labels = g.integers(0, 6, size=70)
    emb = g.normal(size=(70, 3))
    pos, neg = plots.pair_distances(emb, labels, max_pairs=300, seed=4)
    assert pos.shape == neg.shape == (300,)
    ref_pos, ref_neg = brute_pair_distances(emb, labels)
    assert np.abs(pos[:, None] - ref_pos[None, :]).min(1).max() < 1e-9
    assert np.abs(neg[:, None] - ref_neg[None, :]).min(1).max() < 1e-9
    assert pos.min() > 0  # never a sample paired with itself
    # many different pairs are drawn, and the draw is seeded
    assert np.unique(pos).size > 100 and np.unique(neg).size > 200
    np.testing.assert_array_equal(plots.pair_distances(emb, labels, 300, seed=4)[0], pos)
    assert not np.array_equal(plots.pair_distances(emb, labels, 300, seed=5)[0], pos)


def test_pair_distances_sampled_reach_every_class():
    labels = np.repeat(np.arange(4), [2, 30, 5, 40])
    emb = labels[:, None] * 100.0 + np.random.default_rng(0).normal(size=(77, 2))
    pos, neg = plots.pair_distances(emb, labels, max_pairs=2000)
    # positive pairs stay inside one class (distance < 10), negatives cross classes (> 50)
    assert pos.max() < 10 and neg.min() > 50


def test_pair_distances_degenerate_sets():
    emb = np.random.default_rng(0).normal(size=(50, 2))
    for max_pairs in (10, 10_000):
        pos, neg = plots.pair_distances(emb, np.zeros(50, int), max_pairs=max_pairs)
        assert neg.size == 0 and pos.size == min(max_pairs, 50 * 49 // 2)
        pos, neg = plots.pair_distances(emb, np.arange(50), max_pairs=max_pairs)
        assert pos.size == 0 and neg.size == min(max_pairs, 50 * 49 // 2)
    pos, neg = plots.pair_distances(emb[:1], [3])
    assert pos.size == neg.size == 0


def test_pair_distances_half_precision_and_errors():
    emb = torch.randn(20, 4)
    full = plots.pair_distances(emb, torch.arange(20) % 3)
    half = plots.pair_distances(emb.half(), torch.arange(20) % 3)
    np.testing.assert_allclose(half[0], full[0], rtol=1e-2)
    with pytest.raises(ValueError, match="labels must have one entry per embedding"):
        plots.pair_distances(emb, torch.arange(19))
    with pytest.raises(ValueError, match="embeddings must be 2-D"):
        plots.pair_distances(torch.randn(20), torch.arange(20))
    with pytest.raises(ValueError, match="max_pairs"):
        plots.pair_distances(emb, torch.arange(20), max_pairs=0)


# ---- histograms ---------------------------------------------------------------------------


def test_distance_histograms(tmp_path):
    g = np.random.default_rng(0)
    args = [g.gamma(2, size=300), g.gamma(5, size=900), g.gamma(1, size=300), g.gamma(9, size=900)]
    assert_png(plots.plot_distance_histograms(*args, tmp_path / "h.png"))
    # no positive pairs, constant distances, nothing at all, tensors
    edge = [[], np.full(10, 2.0), torch.zeros(3), torch.tensor([])]
    assert_png(plots.plot_distance_histograms(*edge, tmp_path / "e.png"))


# ---- embedding map ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_embedding_map(tmp_path, method):
    g = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 12)
    emb = g.normal(size=(48, 8)) + 4 * np.eye(8)[labels]
    out = plots.plot_embedding_map(
        torch.tensor(emb, dtype=torch.float32), torch.tensor(labels), tmp_path / "m.png",
        method=method, class_names=["cat", "dog", "wolf", "fox"],
    )  # fmt: skip
    assert_png(out)


def test_embedding_map_projection_is_seeded_and_capped():
    x = np.random.default_rng(0).normal(size=(30, 6))
    a, used = plots._project_2d(x, "tsne", seed=3)
    b, _ = plots._project_2d(x, "tsne", seed=3)
    assert used == "t-SNE" and a.shape == (30, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    p, used = plots._project_2d(x, "pca", seed=0)
    assert used == "PCA"
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    np.testing.assert_allclose(np.abs(p), np.abs(ref), atol=1e-9)  # up to each axis' sign


@pytest.mark.parametrize(
    "n, dim, labels",
    [(1, 5, [0]), (4, 5, [0, 0, 1, 1]), (30, 2, [0] * 30), (40, 1, list(range(40)))],
)
def test_embedding_map_edge_inputs(tmp_path, n, dim, labels):
    emb = np.random.default_rng(0).normal(size=(n, dim))
    out = plots.plot_embedding_map(emb, labels, tmp_path / "m.png", max_points=25,
                                   class_names={0: "only"})  # fmt: skip
    assert_png(out)


def test_embedding_map_errors(tmp_path):
    emb, labels = np.zeros((5, 3)), np.arange(5)
    with pytest.raises(ValueError, match="method"):
        plots.plot_embedding_map(emb, labels, tmp_path / "m.png", method="umap")
    with pytest.raises(ValueError, match="labels must have one entry"):
        plots.plot_embedding_map(emb, labels[:4], tmp_path / "m.png")
    with pytest.raises(ValueError, match="NaN"):
        plots.plot_embedding_map(np.full((5, 3), np.nan), labels, tmp_path / "m.png")
    with pytest.raises(ValueError, match="empty"):
        plots.plot_embedding_map(np.zeros((0, 3)), [], tmp_path / "m.png")


# ---- retrieval grid -----------------------------------------------------------------------


@pytest.mark.parametrize("channels, q, k", [(3, 3, 5), (1, 2, 4), (1, 1, 1)])
def test_retrieval_grid(tmp_path, channels, q, k):
    g = np.random.default_rng(0)
    queries = torch.rand(q, channels, 12, 12)
    neighbours = g.random((q, k, channels, 12, 12)) * 1.2  # out-of-range values are clipped
    correct = g.random((q, k)) > 0.5
    out = plots.plot_retrieval_grid(
        queries, neighbours, correct, tmp_path / "g.png",
        query_labels=np.arange(q), neighbour_labels=g.integers(0, 9, (q, k)),
    )  # fmt: skip
    assert_png(out, min_side=50)


def test_retrieval_grid_frames_are_coloured(tmp_path):
    white = np.ones((2, 3, 20, 20))
    out = plots.plot_retrieval_grid(white, np.ones((2, 1, 3, 20, 20)), [[True], [False]],
                                    tmp_path / "g.png")  # fmt: skip
    pixels = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3).astype(int)

    def present(hex_color):
        rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        return (np.abs(pixels - rgb).sum(1) < 30).sum() > 20

    assert present(plots._RIGHT) and present(plots._WRONG) and present(plots._QUERY)


def test_retrieval_grid_errors(tmp_path):
    q, nb = np.zeros((2, 3, 8, 8)), np.zeros((2, 4, 3, 8, 8))
    with pytest.raises(ValueError, match="neighbour_images must be"):
        plots.plot_retrieval_grid(q, nb[:1], np.ones((1, 4)), tmp_path / "g.png")
    with pytest.raises(ValueError, match="correct must have shape"):
        plots.plot_retrieval_grid(q, nb, np.ones((2, 3)), tmp_path / "g.png")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        plots.plot_retrieval_grid(np.zeros((2, 2, 8, 8)), nb[:, :, :2], np.ones((2, 4)),
                                  tmp_path / "g.png")  # fmt: skip
    with pytest.raises(ValueError, match="query_images must be 4-D"):
        plots.plot_retrieval_grid(q[0], nb, np.ones((2, 4)), tmp_path / "g.png")


# ---- generic curves -----------------------------------------------------------------------


def test_curves(tmp_path):
    curves = {"train loss": np.linspace(1, 0.2, 30), "P@10": torch.linspace(0, 0.3, 30),
              "AUC": [0.5] * 30}  # fmt: skip
    assert_png(plots.plot_curves(curves, tmp_path / "c.png", title="BPR"))
    assert_png(plots.plot_curves({"only": [0.4]}, tmp_path / "one.png", xlabel="step"))
    assert_png(plots.plot_curves({"empty": [], "x": [1, 2]}, tmp_path / "e.png"))
    with pytest.raises(ValueError, match="curves is empty"):
        plots.plot_curves({}, tmp_path / "none.png")
    with pytest.raises(ValueError, match=r"curves\['bad'\] must be 1-D"):
        plots.plot_curves({"bad": np.ones((2, 2))}, tmp_path / "bad.png")
