import math

import numpy as np
import pytest
import torch

import metrickit as mk
from proxy_checks import (
    assert_edge_cases,
    assert_equals_pml,
    assert_matches_reference,
    assert_module_contract,
    random_problem,
)
from proxy_reference import arcface_loss as ref_loss


def fn(x, y, p, reduction="mean"):
    return mk.F.subcenter_arcface_loss(x, y, p, 2, margin=0.6, scale=3.0, reduction=reduction)


def ref(e, y, p, reduction):
    return ref_loss(e, y, p, 0.6, 3.0, reduction, sub_centers=2)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_value_and_grads_match_reference(layout, reduction):
    emb, proxies = random_problem(layout, per_class=2, seed=11)
    emb[0] = -proxies[2 * layout[0]] - proxies[2 * layout[0] + 1]  # far from both sub-centres
    assert_matches_reference(fn, ref, emb, layout, proxies, reduction)


def test_one_sub_centre_is_arcface_and_nearest_sub_centre_counts():
    g = torch.Generator().manual_seed(0)
    x, p, y = torch.randn(12, 5, generator=g), torch.randn(4, 5, generator=g), torch.arange(12) % 4
    assert torch.equal(mk.F.subcenter_arcface_loss(x, y, p, 1), mk.F.arcface_loss(x, y, p))
    # adding a second sub-centre that is every sample's nearest changes the loss
    p2 = torch.stack([p, -p], 1).reshape(8, 5)  # class c: rows 2c (p_c) and 2c+1 (−p_c)
    flipped = torch.stack([-p, p], 1).reshape(8, 5)
    a = mk.F.subcenter_arcface_loss(x, y, p2, 2)
    assert a == mk.F.subcenter_arcface_loss(x, y, flipped, 2)  # the order within a class is free
    assert a < mk.F.arcface_loss(x, y, p)


def test_equals_pml():
    from pytorch_metric_learning.losses import SubCenterArcFaceLoss as PML

    torch.manual_seed(0)
    ours = mk.losses.SubCenterArcFaceLoss(8, 16)
    pml = PML(num_classes=8, embedding_size=16, margin=math.degrees(0.5))
    assert assert_equals_pml(ours, pml, "W", transpose=True) > 0
    torch.manual_seed(1)
    ours = mk.losses.SubCenterArcFaceLoss(8, 16, sub_centers=np.int64(5), scale=20.0)
    pml = PML(num_classes=8, embedding_size=16, sub_centers=5, scale=20, margin=math.degrees(0.5))
    assert_equals_pml(ours, pml, "W", transpose=True)


def test_edge_cases():
    assert_edge_cases(lambda x, y, p, **kw: mk.F.subcenter_arcface_loss(x, y, p, 3, **kw), 3)


def test_module_and_validation():
    m = assert_module_contract(
        mk.losses.SubCenterArcFaceLoss, "subcenter_arcface",
        ("sub_center_arcface", "subcenter_arc_face"), mk.F.subcenter_arcface_loss, per_class=4,
        sub_centers=4, margin=0.4,
    )
    assert (m.sub_centers, m.margin, m.scale) == (4, 0.4, 64.0)
    assert mk.losses.SubCenterArcFaceLoss(5, 3).proxies.shape == (15, 3)
    with pytest.raises(ValueError, match="sub_centers"):
        mk.losses.SubCenterArcFaceLoss(3, 4, sub_centers=0)
    with pytest.raises(TypeError, match="sub_centers"):
        mk.losses.SubCenterArcFaceLoss(3, 4, sub_centers=2.0)
    with pytest.raises(ValueError, match=r"proxies must be \[num_classes·3"):
        mk.F.subcenter_arcface_loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.randn(7, 3))
