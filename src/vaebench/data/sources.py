"""Training data as tensors, batched by shuffled index.

:func:`as_data` accepts numpy arrays, torch tensors, a torch ``Dataset``, a folder of
images or a ``.npy`` file (memory-mapped and read batch by batch), and checks the data
before any training starts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
#: Image modes read as grayscale (one channel); any other mode is read as RGB.
GRAY_MODES = ("L", "1", "P", "I;16", "LA")


class ArrayData:
    """N samples of one shape, in memory (a tensor) or on disk (a memory-mapped array).

    Integer arrays (8-bit images) are scaled to [0, 1] as they are read.
    """

    def __init__(self, x: torch.Tensor | np.ndarray, labels: torch.Tensor | None = None,
                 name: str = "data"):
        _refuse_complex(x, name)
        if x.ndim < 2:
            raise ValueError(f"{name} must have a batch dimension and at least one feature "
                             f"dimension, got shape {tuple(x.shape)}")
        if labels is not None and len(labels) != len(x):
            raise ValueError(f"{name}: {len(labels)} labels for {len(x)} samples")
        self.x = x
        self.labels = labels
        self.name = name

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def in_memory(self) -> bool:
        return isinstance(self.x, torch.Tensor)

    def to(self, device: torch.device | str) -> ArrayData:
        """Move in-memory data to ``device`` once; memory-mapped data stays on disk."""
        if not self.in_memory:
            return self
        labels = None if self.labels is None else self.labels.to(device)
        return ArrayData(self.x.to(device), labels, self.name)

    def take(self, index: torch.Tensor | np.ndarray | slice) -> torch.Tensor:
        """Rows ``index`` as a float32 tensor (on the device of in-memory data)."""
        if self.in_memory:
            return self.x[index]
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return _to_float(np.asarray(self.x[index]))

    def subset(self, index: torch.Tensor | slice, name: str | None = None) -> ArrayData:
        """Rows ``index`` (and their labels) as in-memory data."""
        labels = None if self.labels is None else self.labels[index]
        return ArrayData(self.take(index), labels, name or self.name)

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                even: bool = False, device: torch.device | str | None = None,
                with_labels: bool = False,
                part: tuple[int, int] | None = None) -> Iterator[Any]:
        """Yield batches of rows (or ``(rows, labels)`` pairs with ``with_labels``), as
        :func:`batch_bounds` cuts them; a shuffled order is one ``randperm`` per epoch.
        ``part=(k, parts)`` yields only the k-th of the ``parts`` contiguous parts of each
        batch (see :func:`part_bounds`): a data-parallel process's share, possibly empty."""
        if with_labels and self.labels is None:
            raise ValueError(f"{self.name} has no labels, but the model needs them")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start, end in batch_bounds(n, batch_size, drop_last, even):
            if part is not None:
                start, end = (start + bound for bound in part_bounds(end - start, *part))
            if order is None:
                index: Any = slice(start, end)
            else:
                index = order[start:end]
                if not self.in_memory:  # read sorted rows from disk, keep labels aligned
                    index = index.sort().values
                elif index.device != self.x.device:
                    index = index.to(self.x.device)
            batch = self.take(index)
            if device is not None:
                batch = batch.to(device, non_blocking=True)
            if with_labels:
                yield batch, self.labels[index].to(batch.device)
            else:
                yield batch

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(batch_bounds(len(self), batch_size, drop_last))

    def check(self, input_dim: tuple[int, ...] | None = None, chunk: int = 8192) -> None:
        """Raise a ValueError naming the problem: wrong shape, NaN or infinite values."""
        if len(self) == 0:
            raise ValueError(f"{self.name} is empty")
        if input_dim is not None and self.sample_shape != tuple(input_dim):
            hint = ""
            if len(self.sample_shape) != len(input_dim):
                hint = (f" ({len(self.sample_shape) + 1} dimensions including the batch, "
                        f"expected {len(input_dim) + 1})")
            raise ValueError(f"{self.name} has samples of shape {self.sample_shape}{hint}, but "
                             f"the model's input_dim is {tuple(input_dim)}")
        for start in range(0, len(self), chunk):
            block = self.take(slice(start, start + chunk))
            finite = torch.isfinite(block)
            if not bool(finite.all()):
                bad = start + int((~finite).flatten(1).any(1).nonzero()[0])
                kind = "NaN" if bool(torch.isnan(block).any()) else "infinite"
                raise ValueError(f"{self.name} contains {kind} values (first in sample {bad})")


def batch_bounds(n: int, batch_size: int, drop_last: bool = False,
                 even: bool = False) -> list[tuple[int, int]]:
    """Each batch's ``(start, end)`` in an epoch of ``n`` rows: full batches of
    ``batch_size`` then the remainder (left out with ``drop_last``), or with ``even``
    ``ceil(n / batch_size)`` batches whose sizes differ by at most one, so that no step
    sees only the few rows left over (a batch of 12 after one of 500 moves the weights as
    far, from 40 times fewer rows)."""
    if even:
        count = math.ceil(n / batch_size)
        edges = [n * i // count for i in range(count + 1)]
        return list(zip(edges[:-1], edges[1:], strict=True))
    stop = n - n % batch_size if drop_last else n
    return [(first, min(first + batch_size, n)) for first in range(0, stop, batch_size)]


def part_bounds(size: int, k: int, parts: int) -> tuple[int, int]:
    """Start and end of the k-th of ``parts`` contiguous parts of ``size`` rows, whose
    sizes differ by at most one row, the larger first."""
    base, larger = divmod(size, parts)
    start = k * base + min(k, larger)
    return start, start + base + (k < larger)


def has_class_labels(data: ArrayData) -> bool:
    """Whether ``data`` has one integer class label per sample (shape (N,) or (N, 1))."""
    labels = data.labels
    if labels is None or labels.is_floating_point():
        return False
    return labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)


def stratified_order(labels: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Every index of ``labels`` once, the classes interleaved so that each prefix holds
    every class in proportion (up to rounding). Within a class the samples go by ``keys``,
    and so do samples of different classes at the same relative place."""
    labels, keys = np.asarray(labels), np.asarray(keys)
    place = np.empty(len(labels))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[np.argsort(keys[members], kind="stable")]
        place[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((keys, place))


def seeded_order(data: ArrayData, seed: int) -> torch.Tensor:
    """A random order of the rows of ``data`` fixed by ``seed``; stratified (see
    :func:`stratified_order`) when ``data`` has class labels, so that its first rows are a
    class-balanced draw."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    if not has_class_labels(data):
        return order
    ranks = order.argsort().numpy()  # row i is drawn at place ranks[i]
    return torch.from_numpy(stratified_order(data.labels.cpu().reshape(-1).numpy(), ranks))


def _refuse_complex(x: torch.Tensor | np.ndarray, name: str) -> None:
    """Complex values would silently lose their imaginary part in the float32 cast."""
    if x.is_complex() if isinstance(x, torch.Tensor) else np.iscomplexobj(x):
        raise ValueError(f"{name} holds complex values ({x.dtype}): complex data are not "
                         "supported; give the real part, or the real and imaginary parts as "
                         "separate channels")


def _to_float(array: np.ndarray) -> torch.Tensor:
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return torch.from_numpy(array.astype(np.float32))
    return torch.from_numpy(np.array(array, dtype=np.float32))  # a writable copy


def _from_dataset(dataset: torch.utils.data.Dataset, name: str) -> ArrayData:
    """Read a map-style torch Dataset once into a tensor (items ``x`` or ``(x, label)``)."""
    xs, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if isinstance(item, (tuple, list)):
            xs.append(torch.as_tensor(item[0]))
            if len(item) > 1:
                labels.append(torch.as_tensor(item[1]))
        else:
            xs.append(torch.as_tensor(item))
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"{name}: samples have different shapes {sorted(shapes)[:3]}")
    x = torch.stack(xs)
    _refuse_complex(x, name)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    y = torch.stack(labels).long() if len(labels) == len(xs) and labels else None
    return ArrayData(x, y, name)


def load_image_folder(folder: str | Path, name: str | None = None, *,
                      skip_bad_images: bool = False) -> ArrayData:
    """Images of one size in ``folder`` (sorted by name), as (N, C, H, W) in [0, 1].

    Grayscale images give C = 1; if any image has colour all are read as RGB (C = 3).
    Labels are the names of sub-folders when the images sit in sub-folders (sorted).
    One file is open at a time. A file that cannot be read is a ValueError naming it, or
    with ``skip_bad_images`` a warning naming it, and the file is left out.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {folder}")
    kept, arrays = _read_images(files, skip_bad_images)
    if not kept:
        raise ValueError(f"none of the {len(files)} images in {folder} could be read")
    stacked = _stack_images(kept, arrays)
    classes = sorted({p.parent.relative_to(folder).as_posix() for p in files})
    labels = None
    if classes != ["."]:
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[p.parent.relative_to(folder).as_posix()] for p in kept])
    return ArrayData(_to_float(stacked), labels, name or str(folder))


def _read_images(files: list[Path], skip_bad: bool) -> tuple[list[Path], list[np.ndarray]]:
    """The readable files and their images (grayscale as L, others as RGB), all one size."""
    kept, arrays = [], []
    for path in files:
        try:
            array = _read_image(path)
        except ValueError as err:
            if not skip_bad:
                raise ValueError(f"{err} (skip_bad_images=True leaves such files out)"
                                 ) from err.__cause__
            warnings.warn(f"skipping {err}", stacklevel=3)
            continue
        if arrays and array.shape[:2] != arrays[0].shape[:2]:
            (h, w), (h0, w0) = array.shape[:2], arrays[0].shape[:2]
            raise ValueError(f"{path} is {w} x {h} but {kept[0]} is {w0} x {h0}: all images "
                             "must share one size")
        kept.append(path)
        arrays.append(array)
    return kept, arrays


def _stack_images(files: list[Path], arrays: list[np.ndarray]) -> np.ndarray:
    """(N, C, H, W): one channel if every image is grayscale, else every image as RGB."""
    if all(array.ndim == 2 for array in arrays):
        return np.stack(arrays)[:, None]
    rgb = [array if array.ndim == 3 else _read_image(path, "RGB")
           for path, array in zip(files, arrays, strict=True)]
    return np.stack(rgb).transpose(0, 3, 1, 2)


def _read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """One image as uint8 in ``mode`` (None: L for grayscale modes, else RGB), its file
    closed on return; a file PIL cannot read is a ValueError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            target = mode or ("L" if image.mode in GRAY_MODES else "RGB")
            return np.asarray(image.convert(target), dtype=np.uint8)
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ...) on bad files
        raise ValueError(f"unreadable image {path}: {type(err).__name__}: {err}") from err


def _open_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file memory-mapped; never unpickled (object arrays are refused)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path} cannot be read as a .npy array of numbers (object arrays "
                         f"are never unpickled): {err}") from err


def _integer_labels(labels: Any, name: str) -> torch.Tensor:
    """Labels as int64; float labels must hold whole numbers (no silent truncation)."""
    array = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: labels must be integer class indices, got {array.dtype}")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            raise ValueError(f"{name}: labels must be integer class indices, got non-integer "
                             f"or non-finite values such as {array[bad][0]}")
    return torch.as_tensor(array).long()


def as_data(data: Any, labels: Any = None, name: str = "data", *,
            skip_bad_images: bool = False) -> ArrayData:
    """Wrap user data for training and evaluation.

    ``data`` may be an :class:`ArrayData`, a ``(x, labels)`` tuple, a torch tensor, a numpy
    array (uint8 is read as 8-bit images and scaled to [0, 1]), a torch ``Dataset``, a
    folder of images, or a path to a ``.npy`` file (memory-mapped, read batch by batch).
    Complex values are refused. ``skip_bad_images``: see :func:`load_image_folder`.
    """
    if isinstance(data, ArrayData):
        return data
    if isinstance(data, tuple) and len(data) == 2 and labels is None:
        data, labels = data
    y = None if labels is None else _integer_labels(labels, name)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        _refuse_complex(data, name)
    if isinstance(data, torch.Tensor):
        x = data.float() / 255.0 if data.dtype == torch.uint8 else data.float()
        return ArrayData(x, y, name)
    if isinstance(data, np.memmap):
        return ArrayData(data, y, name)
    if isinstance(data, np.ndarray):
        return ArrayData(_to_float(data), y, name)
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            return load_image_folder(path, name, skip_bad_images=skip_bad_images)
        if path.suffix == ".npy" and path.is_file():
            return ArrayData(_open_npy(path), y, name)
        raise ValueError(f"{path} is neither a folder of images nor a .npy file")
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        return _from_dataset(data, name)
    raise TypeError(f"cannot use {type(data).__name__} as {name}: give a tensor, a numpy array, "
                    "a torch Dataset, a folder of images or a .npy file")
