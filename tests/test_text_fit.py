import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from metrickit.text.cached import cached_backward  # noqa: E402
from metrickit.text.data import ScoredPairs, TextPairs  # noqa: E402
from metrickit.text.encoder import SentenceEncoder  # noqa: E402
from metrickit.text.fit import FitConfig, fit  # noqa: E402
from metrickit.text.losses import PAIRS, SCORED, TextLoss, get_text_loss  # noqa: E402
from tiny_text import WORDS, tiny_bert, tiny_tokenizer  # noqa: E402


def _mnrl(a, p, negatives=None):
    """In-batch softmax cross-entropy over scaled cosines, written with plain loops."""
    p = p if negatives is None else torch.cat([p, negatives])
    total = 0
    for i in range(a.shape[0]):
        logits = torch.stack(
            [20 * torch.cosine_similarity(a[i], p[j], dim=0) for j in range(p.shape[0])]
        )
        total = total - torch.log_softmax(logits, 0)[i]
    return total / a.shape[0]


def _mse(x1, x2, scores):
    return ((torch.cosine_similarity(x1, x2) - scores) ** 2).mean()


MNRL = TextLoss("mnrl_test", PAIRS, _mnrl)
MSE = TextLoss("mse_test", SCORED, _mse)


def _sentences(n, seed):
    g = np.random.default_rng(seed)
    return [" ".join(g.choice(WORDS, size=g.integers(1, 9))) for _ in range(n)]


def _encoder(dropout=0.0, dtype=torch.float64):
    enc = SentenceEncoder(tiny_bert(0, dropout), tiny_tokenizer(), max_seq_length=16)
    return enc.to(dtype)


def _grads(enc):
    grads = [p.grad.clone() for p in enc.parameters() if p.grad is not None]
    assert len(grads) > 30  # every parameter but the unused pooler's
    return grads


@pytest.mark.parametrize(
    ("with_negatives", "loss"),
    [(False, MNRL), (True, MNRL), (False, "mnrl"), (True, "mnrl_sym"), (False, "cosent")],
)
def test_cached_gradients_equal_uncached_float64(with_negatives, loss):
    loss = loss if isinstance(loss, TextLoss) else get_text_loss(loss)
    columns = [_sentences(10, s) for s in range(3 if with_negatives else 2)]
    scores = torch.linspace(0, 1, 10, dtype=torch.float64) if loss.kind == SCORED else None
    enc = _encoder()
    enc.train()  # dropout probability 0: train mode is deterministic
    enc.zero_grad()
    want = loss([enc.embed(c) for c in columns], scores)
    want.backward()
    want_grads = _grads(enc)
    enc.zero_grad()
    got = cached_backward(enc, columns, loss, scores, mini_batch_size=3)
    assert not got.requires_grad
    torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    for g, w in zip(_grads(enc), want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)


def test_cached_with_dropout_restores_rng_per_chunk():
    columns = [_sentences(9, 5), _sentences(9, 6)]
    enc = _encoder(dropout=0.3)
    enc.train()

    def chunked_reference(seed):
        torch.manual_seed(seed)
        enc.zero_grad()
        embs = [torch.cat([enc.embed(c[i : i + 4]) for i in range(0, 9, 4)]) for c in columns]
        _mnrl(*embs).backward()
        return _grads(enc), torch.get_rng_state()

    want, state_after = chunked_reference(0)
    other, _ = chunked_reference(1)
    assert not torch.allclose(want[0], other[0])  # dropout does change the gradients
    torch.manual_seed(0)
    enc.zero_grad()
    cached_backward(enc, columns, MNRL, mini_batch_size=4)
    for g, w in zip(_grads(enc), want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
    assert torch.equal(torch.get_rng_state(), state_after)  # the RNG moves on as uncached


def _pairs(n=24):
    a = _sentences(n, 10)
    return TextPairs(a, [s + " with a dog" for s in a], name="toy")


def test_fit_pairs_learns_and_is_seeded():
    data = _pairs()
    config = FitConfig(loss=MNRL, batch_size=8, lr=1e-3, epochs=3, seed=0)
    runs = []
    for _ in range(2):
        enc = _encoder(dtype=torch.float32)
        history = fit(enc, data, config, evaluate=lambda e: {"n": float(len(e.encode(["a"])))})
        runs.append(history)
    assert runs[0]["step_loss"] == runs[1]["step_loss"]  # same seed, same run
    assert len(runs[0]["step_loss"]) == 9 and len(runs[0]["eval"]) == 3
    # the shared schedule: linear warmup over ceil(0.1 × 9) = 1 step, then linear decay to 0
    np.testing.assert_allclose(runs[0]["lr"], [1e-3] + [1e-3 * (1 - k / 8) for k in range(8)])
    first = np.mean(runs[0]["step_loss"][:3])
    last = np.mean(runs[0]["step_loss"][-3:])
    assert last < first


def test_fit_cached_matches_uncached_steps():
    data = _pairs(16)
    losses = []
    for mini in (None, 3):
        enc = _encoder(dtype=torch.float64)
        config = FitConfig(loss=MNRL, batch_size=8, lr=1e-3, mini_batch_size=mini)
        losses.append(fit(enc, data, config)["step_loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-9)


def test_fit_scored_pairs_and_data_checks():
    s1, s2 = _sentences(12, 1), _sentences(12, 2)
    scored = ScoredPairs(s1, s2, np.linspace(0, 5, 12), (0, 5), "toy")
    enc = _encoder(dtype=torch.float32)
    history = fit(enc, scored, FitConfig(loss=MSE, batch_size=4, lr=1e-3))
    assert len(history["step_loss"]) == 3
    with pytest.raises(ValueError, match="scored pairs"):
        fit(enc, _pairs(), FitConfig(loss=MSE))
    with pytest.raises(ValueError, match="min_score"):
        fit(enc, scored, FitConfig(loss=MNRL))
    with pytest.raises(ValueError, match="warmup_ratio"):
        FitConfig(warmup_ratio=2.0)
    with pytest.raises(ValueError, match="loss"):
        fit(enc, scored, FitConfig(loss="triplet"))


def test_text_losses_are_the_contract_functions():
    from metrickit import functional as F

    g = torch.Generator().manual_seed(0)
    x1, x2, x3 = (torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(3))
    s = torch.rand(6, generator=g, dtype=torch.float64)
    assert get_text_loss("cosent")([x1, x2], s) == F.cosent_loss(x1, x2, s)
    assert get_text_loss("angle", scale=5.0)([x1, x2], s) == F.angle_loss(x1, x2, s, scale=5.0)
    assert get_text_loss("cosine")([x1, x2], s) == F.cosine_similarity_loss(x1, x2, s)
    assert get_text_loss("mnrl")([x1, x2, x3]) == F.multiple_negatives_ranking_loss(x1, x2, x3)
    sym = F.multiple_negatives_ranking_loss(x1, x2, symmetric=True)
    assert get_text_loss("mnrl_sym")([x1, x2]) == sym
    with pytest.raises(ValueError, match="margin"):
        get_text_loss("cosent", margin=1.0)
    with pytest.raises(ValueError, match="scores"):
        get_text_loss("cosent")([x1, x2])


class _Recorder:
    def __init__(self):
        self.steps, self.epochs, self.evaluations = [], [], []

    def on_step(self, trainer, step, result):
        self.steps.append((step, result.loss, trainer.optimizer.param_groups[0]["lr"]))

    def on_epoch(self, trainer, epoch, row):
        self.epochs.append((epoch, dict(row)))

    def on_evaluate(self, trainer, split, metrics):
        self.evaluations.append((split, trainer.step, dict(metrics)))


def _scripted(values):
    """An evaluate function returning ``values`` in turn, keeping each call's weights."""
    states = []

    def evaluate(enc):
        states.append({k: v.clone() for k, v in enc.state_dict().items()})
        return {"spearman": values[len(states) - 1]}

    return evaluate, states


def test_fit_callbacks_and_step_evaluations():
    data = _pairs(24)  # 3 steps per epoch
    recorder = _Recorder()
    evaluate, _ = _scripted([1.0, 2.0, 3.0, 4.0])
    config = FitConfig(loss=MNRL, batch_size=8, lr=1e-3, epochs=2, eval_steps=2)
    history = fit(_encoder(dtype=torch.float32), data, config, evaluate, callbacks=[recorder])
    assert [s for s, _, _ in recorder.steps] == [1, 2, 3, 4, 5, 6]
    assert [loss for _, loss, _ in recorder.steps] == history["step_loss"]
    # step 2 (mid-epoch), 3 (end of epoch 1), 4 (mid-epoch), 6 (end of epoch 2)
    assert [(r["step"], r["epoch"]) for r in history["eval"]] == [
        (2, pytest.approx(2 / 3)), (3, 1), (4, pytest.approx(1 + 1 / 3)), (6, 2)
    ]
    assert [r["spearman"] for r in history["eval"]] == [1.0, 2.0, 3.0, 4.0]
    assert [(split, step) for split, step, _ in recorder.evaluations] == [
        ("validation", 2), ("validation", 3), ("validation", 4), ("validation", 6)
    ]
    assert [e for e, _ in recorder.epochs] == [1, 2]
    row = recorder.epochs[0][1]
    assert row["dev_spearman"] == 2.0 and row["loss"] == pytest.approx(
        np.mean(history["step_loss"][:3])
    )
    assert "best" not in history  # no best_metric: the last weights are kept


def test_fit_keeps_best_weights_and_stops_early():
    data = _pairs(24)
    evaluate, states = _scripted([0.1, 0.9, 0.3, 0.2, 0.8])
    config = FitConfig(loss=MNRL, batch_size=8, lr=1e-3, epochs=3, eval_steps=1,
                       best_metric="spearman", patience=2)  # fmt: skip
    enc = _encoder(dtype=torch.float32)
    history = fit(enc, data, config, evaluate)
    # evaluations at steps 1, 2 (best), 3, 4: two without improvement → stop after step 4
    assert len(history["step_loss"]) == 4 and len(states) == 4
    assert history["best"] == {"step": 2, "metric": "spearman", "value": 0.9}
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, states[1][k], rtol=0, atol=0)
    assert not torch.equal(states[1]["model.embeddings.word_embeddings.weight"],
                           states[3]["model.embeddings.word_embeddings.weight"])  # fmt: skip
    with pytest.raises(ValueError, match="best_metric"):
        fit(enc, data, FitConfig(loss=MNRL, best_metric="spearman"))  # nothing to evaluate
    with pytest.raises(ValueError, match="best_metric 'nope'"):
        fit(enc, data, FitConfig(loss=MNRL, best_metric="nope"), evaluate=lambda e: {"a": 1.0})
    with pytest.raises(ValueError, match="patience"):
        FitConfig(patience=1)
    with pytest.raises(ValueError, match="precision"):
        FitConfig(precision="16")


def test_stop_from_a_callback_ends_after_the_epoch():
    class Stop:
        def on_step(self, trainer, step, result):
            trainer.should_stop = True

    config = FitConfig(loss=MNRL, batch_size=8, lr=1e-3, epochs=3)
    history = fit(_encoder(dtype=torch.float32), _pairs(24), config, callbacks=[Stop()])
    assert len(history["step_loss"]) == 3 and len(history["epoch_seconds"]) == 1
    with pytest.raises(TypeError, match="hooks"):
        fit(_encoder(dtype=torch.float32), _pairs(24), config, callbacks=[object()])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_cached_like_uncached(precision):
    from metrickit.text.fit import train_step
    from metrickit.training.precision import MixedPrecision

    columns = [_sentences(8, 3), _sentences(8, 4)]
    grads = []
    for mini in (None, 3):
        enc = _encoder(dtype=torch.float32)
        enc.train()
        amp = MixedPrecision(precision, "cpu")
        value = train_step(enc, get_text_loss("mnrl"), columns, None, mini, amp)
        assert value.dtype == torch.float32 and torch.isfinite(value)
        grads.append(_grads(enc))
    got, want = (torch.cat([g.flatten() for g in gs]) for gs in grads)
    # the same half-precision forward, chunked or not (whole-vector tolerance: some gradients,
    # e.g. of the attention keys' biases, are 0 up to rounding)
    assert (got - want).norm() <= 0.02 * want.norm()
    config = FitConfig(loss=MNRL, batch_size=8, lr=1e-3, precision=precision, mini_batch_size=4)
    history = fit(_encoder(dtype=torch.float32), _pairs(16), config)
    assert np.isfinite(history["step_loss"]).all() and len(history["step_loss"]) == 2
