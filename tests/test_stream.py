import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from image_folders import write_mnist_pngs
from metrickit.data import StreamingImageFolder, augmentation, load_dataset, split_dataset
from metrickit.data.augment import Normalize, RandomHorizontalFlip, RandomResizedCrop
from metrickit.samplers import PKSampler


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_mnist_pngs(tmp_path_factory.mktemp("mnist_png"), per_class=6)


def test_stream_matches_in_memory_loader(folder):
    streamed = StreamingImageFolder(folder)
    loaded = load_dataset(folder)
    assert len(streamed) == len(loaded) == 60
    assert streamed.classes == loaded.classes
    assert torch.equal(streamed.labels, loaded.y)
    assert streamed.targets is streamed.labels and streamed.y is streamed.labels
    for i in (0, 17, 59):
        x, y = streamed[i]
        assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
        assert torch.equal(x, loaded.x[i]) and int(y) == int(loaded.y[i])
    assert streamed.image_shape == (1, 28, 28)


def test_stream_never_opens_images_for_labels(folder, monkeypatch):
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    data = StreamingImageFolder(folder, image_size=14)
    sampler = PKSampler(data.labels, p=4, k=3, seed=0)
    assert data.image_shape == (1, 14, 14)
    assert opened == []
    batch = next(iter(sampler))
    x, y = next(iter(DataLoader(data, batch_sampler=[batch])))
    assert x.shape == (12, 1, 14, 14) and len(opened) == 12
    assert len(set(y.tolist())) == 4


def test_stream_rgb_resize_and_transform(folder):
    seen = []

    def transform(x):
        seen.append(x.shape)
        return x * 2

    data = StreamingImageFolder(folder, mode="RGB", image_size=(20, 16), transform=transform)
    x, _ = data[3]
    assert seen == [(3, 20, 16)] and x.shape == (3, 20, 16) and float(x.max()) > 1.0
    plain = data.with_transform(None)
    assert torch.allclose(plain[3][0] * 2, x) and data.transform is transform


def test_stream_splits(folder):
    data = StreamingImageFolder(folder)
    train, test = split_dataset(data, "holdout", 0.5, seed=0)
    assert isinstance(train, StreamingImageFolder) and len(train) + len(test) == 60
    assert not set(train.paths) & set(test.paths)
    zs_train, zs_test = split_dataset(data, "zero_shot")
    assert zs_train.classes == ["0", "1", "2", "3", "4"] and zs_test.classes[0] == "5"
    assert sorted(set(zs_test.labels.tolist())) == [0, 1, 2, 3, 4]
    x, y = zs_test[0]
    assert zs_test.paths[0].parent.name == "5" and int(y) == 0


def test_stream_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StreamingImageFolder(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        StreamingImageFolder(tmp_path)
    (tmp_path / "a" / "bad.png").write_bytes(b"not an image")
    data = StreamingImageFolder(tmp_path)
    with pytest.raises(ValueError, match="cannot read image file .*bad.png"):
        data[0]
    with pytest.raises(ValueError, match="mode"):
        StreamingImageFolder(tmp_path, mode="CMYK")
    with pytest.raises(TypeError, match="transform must be callable"):
        StreamingImageFolder(tmp_path, transform=3)


def test_random_resized_crop_boxes_within_bounds():
    torch.manual_seed(0)
    crop = RandomResizedCrop(12, scale=(0.3, 1.0))
    for _ in range(200):
        top, left, h, w = crop.box(28, 20)
        assert 0 <= top and top + h <= 28 and 0 <= left and left + w <= 20
        assert 0.3 * 560 * 0.8 <= h * w <= 560
    x = torch.rand(3, 28, 20)
    assert crop(x).shape == (3, 12, 12)
    # full-area crop of a square image at its own size is the identity
    full = RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    img = torch.rand(1, 8, 8)
    assert torch.allclose(full(img), img)


def test_flip_and_normalize():
    torch.manual_seed(0)
    x = torch.arange(6.0).reshape(1, 2, 3)
    flips = [torch.equal(RandomHorizontalFlip(0.5)(x), x.flip(-1)) for _ in range(200)]
    assert 60 < sum(flips) < 140
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)
    norm = Normalize([0.5, 0.25], [0.5, 2.0])
    out = norm(torch.ones(2, 3, 3))
    assert torch.allclose(out[0], torch.ones(3, 3))
    assert torch.allclose(out[1], torch.full((3, 3), 0.375))
    with pytest.raises(ValueError, match="channel"):
        norm(torch.ones(3, 2, 2))


def test_augmentation_pipeline_and_backends():
    torch.manual_seed(0)
    aug = augmentation(16, mean=[0.5], std=[0.5])
    out = aug(torch.rand(1, 28, 28))
    assert out.shape == (1, 16, 16) and float(out.min()) >= -1 - 1e-6
    with pytest.raises(ValueError, match="both mean and std"):
        augmentation(16, mean=[0.5])
    with pytest.raises(ValueError, match="backend"):
        augmentation(16, backend="albumentations")
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        with pytest.raises(ModuleNotFoundError, match="torchvision"):
            augmentation(16, backend="torchvision")
    else:  # pragma: no cover - torchvision is not importable beside the pinned CPU torch
        assert augmentation(16, backend="torchvision")(torch.rand(3, 28, 28)).shape == (3, 16, 16)


def test_augmented_stream_through_workers(folder):
    data = StreamingImageFolder(folder, transform=augmentation(20, scale=(0.5, 1.0)))
    sampler = PKSampler(data.labels, p=5, k=2, num_batches=3, seed=1)
    loader = DataLoader(data, batch_sampler=sampler, num_workers=2)
    shapes = [x.shape for x, _ in loader]
    assert shapes == [torch.Size([10, 1, 20, 20])] * 3
    assert np.isfinite(np.concatenate([x.numpy().ravel() for x, _ in loader])).all()
