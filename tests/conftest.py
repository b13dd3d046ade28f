import numpy as np
import pytest
import torch

LAYOUTS = {
    # name: labels of a batch
    "pk_4x3": [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3],
    "uneven": [0, 0, 1, 2, 2, 2, 2, 3, 4, 4],
    "singletons_mixed": [5, 1, 1, 7, 9, 9, 2],
    "two_classes": [0, 1, 0, 1, 1, 0],
}


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request):
    return np.array(LAYOUTS[request.param])


def random_batch(labels, dim=4, seed=0, scale=1.0):
    g = np.random.default_rng(seed)
    return g.normal(size=(len(labels), dim)) * scale


def t64(x, grad=False):
    return torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=grad)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one intra-op thread is fastest and immune to CPU oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
