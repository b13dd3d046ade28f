"""Small helpers of the private kernels module (metrickit._kernels)."""

import torch

from metrickit import _kernels


def test_grad_wanted_reads_grad_mode_and_requires_grad():
    leaf = torch.ones(2, requires_grad=True)
    plain = torch.ones(2)
    assert _kernels.grad_wanted(plain, leaf)
    assert not _kernels.grad_wanted(plain, None)
    with torch.no_grad():
        assert not _kernels.grad_wanted(leaf)
