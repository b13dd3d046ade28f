import pickle

import pytest
import torch
from torch import nn

from metrickit.backbones import (
    BackboneEmbedder,
    build_backbone,
    build_embedder,
    load_weights,
    read_state_dict,
)
from metrickit.models import MLPEmbedder, SmallResNet, small_resnet

SPEC = "metrickit.models:small_resnet"


def tiny_classifier():
    """A torchvision-like model: features then an ``fc`` classifier."""
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))


def test_factory_spec_builds_backbone_with_head():
    torch.manual_seed(0)
    model = build_embedder(SPEC, (1, 28, 28), embedding_dim=16, normalize=True)
    assert isinstance(model, BackboneEmbedder) and isinstance(model.backbone, SmallResNet)
    assert model.backbone[0].in_channels == 1  # factory got in_channels from the input shape
    assert model.head.in_features == 64
    out = model(torch.rand(4, 1, 28, 28))
    assert out.shape == (4, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(4))
    plain = build_embedder("mlp", (1, 28, 28), 16)
    assert isinstance(plain, MLPEmbedder)


def test_weights_loaded_from_torch_save_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = small_resnet(3)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    torch.save({"state_dict": state}, tmp_path / "wrapped.pt")
    save_file(state, str(tmp_path / "w.safetensors"))
    for name in ("w.pt", "wrapped.pt", "w.safetensors"):
        torch.manual_seed(2)
        model = build_backbone(SPEC, (3, 16, 16), 8, weights=tmp_path / name)
        for key, value in model.backbone.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_and_mismatched_weights_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    torch.save({"not": "tensors"}, tmp_path / "meta.pt")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        read_state_dict(tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="no state dict of tensors"):
        read_state_dict(tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="do not fit the backbone: .*missing.*unexpected"):
        load_weights(small_resnet(1), tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "none.pt")
    with pytest.raises(ValueError, match="weights apply to backbone specs"):
        build_embedder("cnn", (1, 28, 28), weights=tmp_path / "other.pt")


def test_classifier_of_library_models_is_removed(monkeypatch):
    import metrickit.backbones as bb

    class FakeVision:
        class models:  # noqa: N801 - mimics torchvision.models
            @staticmethod
            def get_model(name, weights=None):
                assert name == "tiny" and weights is None
                return tiny_classifier()

    monkeypatch.setattr(bb, "_import_library", lambda name: FakeVision)
    model = build_backbone("torchvision:tiny", (3, 2, 2), embedding_dim=4)
    assert isinstance(model.backbone[3], nn.Identity)  # last Linear stripped
    assert model.head.in_features == 5 and model(torch.rand(2, 3, 2, 2)).shape == (2, 4)


def test_missing_libraries_and_bad_specs_are_one_line_errors():
    for spec, match in [
        ("torchvision:resnet50", "needs the torchvision package"),
        ("timm:resnet18", "needs the timm package"),
    ]:
        try:
            __import__(spec.split(":")[0])
        except (ImportError, RuntimeError):
            with pytest.raises(ModuleNotFoundError, match=match):
                build_embedder(spec, (3, 32, 32))
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        build_embedder("no_such_module:f", (3, 8, 8))
    with pytest.raises(ValueError, match="has no 'nothing'"):
        build_embedder("metrickit.models:nothing", (3, 8, 8))
    with pytest.raises(ValueError, match="not an nn.Module"):
        build_embedder("metrickit.models:list_models", (3, 8, 8))
    with pytest.raises(ValueError, match="does not accept inputs of shape"):
        build_embedder(SPEC, (5,))
    with pytest.raises(ValueError, match="unknown model"):
        build_embedder("resnet", (3, 8, 8))


def test_frozen_backbone_gets_no_gradient_and_keeps_batchnorm_statistics():
    torch.manual_seed(0)
    model = build_backbone(SPEC, (1, 12, 12), 8)
    model.freeze_backbone(True)
    model.train()
    assert not model.backbone.training and model.head.training
    bn = model.backbone[1]
    before = bn.running_mean.clone()
    model(torch.rand(6, 1, 12, 12)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.head.weight.grad is not None
    assert torch.equal(bn.running_mean, before)
    model.freeze_backbone(False)
    model.train()
    assert model.backbone.training
    model(torch.rand(6, 1, 12, 12)).sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    with pytest.raises(TypeError, match="frozen must be a bool"):
        model.freeze_backbone(1)
