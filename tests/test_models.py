import pytest
import torch

from metrickit.models import (
    ConvEmbedder,
    L2Normalize,
    MLPEmbedder,
    SiameseNetwork,
    TripletNetwork,
    build_model,
    list_models,
)


def test_l2_normalize_unit_norm_and_zero_rows():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]])
    out = L2Normalize()(x)
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(out[1], torch.zeros(2))
    assert torch.isfinite(out).all()
    x = torch.zeros(2, 3, requires_grad=True)
    L2Normalize()(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("shape", [(10,), (1, 8, 8), (3, 4, 5)])
def test_mlp_flattens_any_shape(shape):
    model = build_model("mlp", shape, embedding_dim=7)
    assert model(torch.rand(4, *shape)).shape == (4, 7)


def test_mlp_layers_and_dropout():
    m = MLPEmbedder(5, 3, hidden=(8, 6), dropout=0.5)
    linears = [layer for layer in m if isinstance(layer, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(5, 8), (8, 6), (6, 3)]
    assert sum(isinstance(layer, torch.nn.Dropout) for layer in m) == 2
    assert isinstance(MLPEmbedder(5, 3, hidden=())[1], torch.nn.Linear)
    with pytest.raises(ValueError, match="dropout"):
        MLPEmbedder(5, dropout=1.0)


@pytest.mark.parametrize("c,size", [(1, 28), (1, 8), (3, 32), (1, (5, 40)), (1, 2)])
def test_cnn_shapes(c, size):
    model = ConvEmbedder(c, size, embedding_dim=16)
    h, w = (size, size) if isinstance(size, int) else size
    out = model(torch.rand(3, c, h, w))
    assert out.shape == (3, 16)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cnn_pooling_adapts_to_image_size():
    def pooled(size):
        feats = ConvEmbedder(1, size).features
        return [m for m in feats if isinstance(m, torch.nn.MaxPool2d)]

    assert len(pooled(28)) == 2  # 28 -> 14 -> 7
    assert len(pooled(8)) == 2  # 8 -> 4 -> 2
    assert len(pooled(2)) == 0


def test_cnn_is_small():
    n = sum(p.numel() for p in ConvEmbedder(1, 28).parameters())
    assert 50_000 <= n <= 100_000


def test_cnn_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        ConvEmbedder(1, 8)(torch.rand(2, 3, 8, 8))


@pytest.mark.parametrize("name,shape", [("mlp", (12,)), ("cnn", (1, 8, 8))])
def test_normalize_option_gives_unit_norms(name, shape):
    x = torch.rand(5, *shape) * 10
    plain = build_model(name, shape).eval()
    assert not torch.allclose(plain(x).norm(dim=1), torch.ones(5))
    model = build_model(name, shape, normalize=True).eval()
    torch.testing.assert_close(model(x).norm(dim=1), torch.ones(5))


def test_siamese_shares_one_parameter_set():
    emb = MLPEmbedder(4, 3, hidden=(5,))
    net = SiameseNetwork(emb)
    assert list(net.parameters()) == list(emb.parameters())
    x1, x2 = torch.rand(6, 4), torch.rand(6, 4)
    e1, e2 = net(x1, x2)
    assert torch.equal(e1, emb(x1)) and torch.equal(e2, emb(x2))
    assert torch.equal(net.embed(x1), e1)
    # gradients from both branches accumulate into the one parameter set
    (e1.sum() + 2 * e2.sum()).backward()
    total = [p.grad.clone() for p in emb.parameters()]
    emb.zero_grad()
    emb(x1).sum().backward()
    (2 * emb(x2).sum()).backward()
    for g, p in zip(total, emb.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_triplet_network_shares_weights_and_normalizes():
    emb = MLPEmbedder(4, 3)
    net = TripletNetwork(emb, normalize=True)
    assert list(net.parameters()) == list(emb.parameters())
    a, p, n = torch.rand(5, 4), torch.rand(5, 4), torch.rand(5, 4)
    ea, ep, en = net(a, p, n)
    for x, e in ((a, ea), (p, ep), (n, en)):
        torch.testing.assert_close(e, torch.nn.functional.normalize(emb(x), dim=1))
        torch.testing.assert_close(e.norm(dim=1), torch.ones(5))
    with pytest.raises(TypeError, match="embedder"):
        TripletNetwork(lambda x: x)


def test_registry():
    assert list_models() == ["cnn", "mlp"]
    assert isinstance(build_model("cnn", (1, 28, 28)), ConvEmbedder)
    assert build_model("mlp", (4,), hidden=(3,), dropout=0.1)(torch.rand(2, 4)).shape == (2, 64)
    with pytest.raises(ValueError, match="valid names: cnn, mlp"):
        build_model("resnet", (1, 28, 28))
    with pytest.raises(ValueError, match=r"'cnn' needs an image input_shape \(C, H, W\)"):
        build_model("cnn", (64,))
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", (0, 3))
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", ())
