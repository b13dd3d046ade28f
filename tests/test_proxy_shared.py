"""The checks every proxy loss of :data:`proxy_checks.CASES` shares, parametrised over them:
values and float64 gradients against the brute-force reference, equality with PML, edge cases."""

import pytest

from proxy_checks import CASES, assert_edge_cases, check_case_pml, check_case_reference


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_value_and_grads_match_reference(name, layout, reduction):
    check_case_reference(CASES[name], layout, reduction)


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_pml(name):
    check_case_pml(CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_edge_cases(name):
    assert_edge_cases(CASES[name].functional)
