"""The row-block machinery of the cosine pair losses (losses/_pair_rows.py): any block size gives
the loss of one block (values and float64 gradients), with references, offsets, mined pairs and
mined triplets, and the pair lists equal the masks they replace."""

import pytest
import torch

import metrickit as mk
from metrickit import miners
from metrickit.losses import _pair_rows
from metrickit.losses._registry import get_loss_class
from metrickit.masks import mined_pair_masks, reference_pair_masks, resolve_references

ROW_LOSSES = sorted(
    name for name in mk.losses.list_losses()
    if issubclass(get_loss_class(name), _pair_rows.PairRowsLoss)
)
LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 1, 3, 0, 4])
MEMORY_LABELS = torch.tensor([1, 2, 0, 5, 3, 3, 0, 2, 1])


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LABELS), 6, dtype=torch.float64, generator=g)
    memory = torch.randn(len(MEMORY_LABELS), 6, dtype=torch.float64, generator=g)
    return x, memory


def _calls(x, memory):
    """Keyword sets covering the contract: in-batch, references with and without an offset,
    mined pairs and mined triplets."""
    pairs = miners.MultiSimilarityMiner(epsilon=0.2)(x.detach(), LABELS)
    gen = torch.Generator().manual_seed(0)
    triplets = miners.DistanceWeightedMiner(generator=gen)(x.detach(), LABELS)
    refs = torch.cat([memory[:4], x, memory[4:]])
    ref_labels = torch.cat([MEMORY_LABELS[:4], LABELS, MEMORY_LABELS[4:]])
    return {
        "batch": {},
        "offset": dict(ref_embeddings=refs, ref_labels=ref_labels, ref_offset=4),
        "no offset": dict(ref_embeddings=memory, ref_labels=MEMORY_LABELS, ref_offset=None),
        "mined pairs": dict(indices_tuple=pairs),
        "mined triplets": dict(indices_tuple=triplets),
    }


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", ROW_LOSSES)
def test_any_row_block_gives_the_one_block_loss(name, reduction, monkeypatch):
    x, memory = _inputs()
    fn = get_loss_class(name).functional
    for case, kw in _calls(x, memory).items():
        results = []
        for elements in (1 << 20, 1, 20, 45):  # one block; 1, 1 and 2-3 rows per block
            monkeypatch.setattr(_pair_rows, "ROW_BLOCK_ELEMENTS", elements)
            leaf = x.clone().requires_grad_(True)
            loss = fn(leaf, LABELS, reduction=reduction, **kw)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
            results.append((loss.detach(), grad))
        for loss, grad in results[1:]:
            torch.testing.assert_close(loss, results[0][0], rtol=1e-12, atol=1e-14, msg=case)
            torch.testing.assert_close(grad, results[0][1], rtol=1e-10, atol=1e-13, msg=case)
        assert results[0][1].abs().sum() > 0, case


def test_pair_lists_equal_the_masks():
    x, memory = _inputs(1)
    for kw in _calls(x, memory).values():
        refs_kw = {k: v for k, v in kw.items() if k != "indices_tuple"}
        pairs = _pair_rows.cosine_pairs(x, LABELS, kw.get("indices_tuple"),
                                        refs_kw.get("ref_embeddings"), refs_kw.get("ref_labels"),
                                        refs_kw.get("ref_offset"))
        refs = resolve_references(x, LABELS, **refs_kw)
        pos, neg = reference_pair_masks(LABELS, refs)
        if "indices_tuple" in kw:
            mined_pos, mined_neg = mined_pair_masks(kw["indices_tuple"], *pos.shape)
            pos, neg = pos & mined_pos, neg & mined_neg
        listed = torch.zeros_like(pos)
        listed[pairs.pos_rows, pairs.pos_cols] = True
        assert torch.equal(listed, pos)
        assert pairs.pos_ptr == [0, *pos.sum(1).cumsum(0).tolist()]
        same = torch.zeros_like(pos)
        same[pairs.same_rows, pairs.same_cols] = True
        assert torch.equal(same, LABELS[:, None] == refs.labels[None, :])
        assert torch.equal(pairs.negatives_per_row(), neg.sum(1).to(torch.float64))
        assert torch.equal(pairs.positives_per_row(), pos.sum(1).to(torch.float64))
        if "indices_tuple" in kw:  # the miner left negatives out
            assert 0 < pairs.negatives_per_row().sum() < (LABELS[:, None] != LABELS).sum()


def test_summed_rows_refuse_an_upstream_gradient_that_differs_between_rows():
    # summed=True takes the backward products in the forward, valid for a plain sum only
    x, _ = _inputs()
    leaf = x.clone().requires_grad_(True)
    pairs = _pair_rows.cosine_pairs(leaf, LABELS, None, None, None, None)

    def terms(s, block, _params, want, _grad_params):
        loss = s.sum(1)
        if want:
            s.fill_(1)
        return loss, None

    loss, _ = _pair_rows.row_loss(pairs, terms, summed=True)
    (fused,) = torch.autograd.grad(loss.sum() * 3, leaf, retain_graph=True)
    plain, _ = _pair_rows.row_loss(_pair_rows.cosine_pairs(leaf, LABELS, None, None, None, None),
                                   terms)
    torch.testing.assert_close(fused, torch.autograd.grad(plain.sum() * 3, leaf)[0])
    with pytest.raises(RuntimeError, match="same upstream gradient for every row"):
        torch.autograd.grad((loss * torch.arange(len(LABELS))).sum(), leaf)


@pytest.mark.parametrize("summed", [False, True])
def test_no_gradient_work_under_no_grad(summed):
    # under torch.no_grad() the loss is the same and fn is never asked for dℓ/dS
    x, _ = _inputs()
    leaf = x.clone().requires_grad_(True)
    asked = []

    def terms(s, block, _params, want, _grad_params):
        asked.append(want)
        return s.sum(1), None

    pairs = _pair_rows.cosine_pairs(leaf, LABELS, None, None, None, None)
    with torch.no_grad():
        quiet, _ = _pair_rows.row_loss(pairs, terms, summed=summed)
    assert asked and not any(asked)
    loud, _ = _pair_rows.row_loss(pairs, terms, summed=summed)
    assert all(asked[len(asked) // 2:])
    torch.testing.assert_close(quiet, loud.detach())
