"""Procedurally generated dSprites.

dSprites (Matthey, Higgins, Hassabis and Lerchner, 2017, "dSprites: Disentanglement testing
Sprites dataset", https://github.com/deepmind/dsprites-dataset) is the set of all 64 x 64
binary images of a 2-D sprite obtained from the Cartesian product of five generative factors:

============  ======  ==========================================
factor        values  range
============  ======  ==========================================
shape         3       square, ellipse, heart (0, 1, 2)
scale         6       ``np.linspace(0.5, 1, 6)``
orientation   40      ``np.linspace(0, 2 * pi, 40)`` (radians)
pos_x         32      ``np.linspace(0, 1, 32)``
pos_y         32      ``np.linspace(0, 1, 32)``
============  ======  ==========================================

for 3 * 6 * 40 * 32 * 32 = 737,280 images. As in the original specification the orientation
grid includes both 0 and 2 pi, so orientation indices 0 and 39 give identical images.

This module does not download anything: images are rendered on the fly from implicit shape
equations (see :func:`render_values` for the geometry), so they are close to, but not
pixel-identical with, the original archive. The factor grid, the factor order and the global
image index (mixed radix, ``pos_y`` fastest) follow the original.

Geometry (image plane ``[0, 1]^2``, pixel centres at ``(j + 0.5) / 64``; ``x`` is the column,
increasing to the right, ``y`` the row, increasing downwards):

* shape centre ``c = 0.2 + 0.6 * pos`` for both axes, so one position step moves the sprite
  by ``0.6 / 31`` of the width (about 1.24 pixels);
* square: half side ``0.13 * scale`` (side about 16.6 pixels at scale 1; its half diagonal,
  0.184, is the largest extent of any shape from its centre);
* ellipse: semi-axes ``0.18 * scale`` along the rotated x axis and ``0.09 * scale`` along the
  rotated y axis (ratio 2:1);
* heart: ``(X^2 + Y^2 - 1)^3 - X^2 Y^3 <= 0`` with ``X = u / 0.14``,
  ``Y = 0.2935 - v / 0.14`` (``u, v`` the local coordinates, in image units, divided by
  ``scale``). The offset 0.2935 is the centroid of the heart region, so the heart rotates
  about its centre of mass; the lobes point up (towards row 0) at orientation 0 and the tip,
  ``1.2935 * 0.14 = 0.181`` from the centre, is its farthest point.

At scale 1 the areas are about 0.068 (square, 277 pixels), 0.051 (ellipse, 208 pixels) and
0.072 (heart, 294 pixels) of the image. Every shape lies inside a disc of radius 0.184 about
its centre, and the centre stays in ``[0.2, 0.8]``, so at any position and orientation the
sprite stays more than 0.5 pixel away from the centres of the border pixels.
"""

from __future__ import annotations

import operator
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from vaebench.files import atomic_write
from vaebench.files import cache_dir as default_cache_dir

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "NUM_IMAGES",
    "IMAGE_SIZE",
    "RENDER_VERSION",
    "SCALE_VALUES",
    "ORIENTATION_VALUES",
    "POSITION_VALUES",
    "factor_classes",
    "global_index",
    "factor_values",
    "render",
    "render_values",
    "load_dsprites",
    "default_cache_dir",
]

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES: tuple[int, ...] = (3, 6, 40, 32, 32)
NUM_IMAGES: int = 737280
IMAGE_SIZE: int = 64

#: Bumped whenever the rendered pixels change; part of every cache key.
RENDER_VERSION: str = "1"

SCALE_VALUES: np.ndarray = np.linspace(0.5, 1.0, FACTOR_SIZES[1])
ORIENTATION_VALUES: np.ndarray = np.linspace(0.0, 2.0 * np.pi, FACTOR_SIZES[2])
POSITION_VALUES: np.ndarray = np.linspace(0.0, 1.0, FACTOR_SIZES[3])

# Geometry constants, in image units (the image is the unit square).
POS_OFFSET: float = 0.2  # shape centre at pos = 0
POS_RANGE: float = 0.6  # shape centre moves from 0.2 to 0.8
SQUARE_HALF_SIDE: float = 0.13
ELLIPSE_SEMI_MAJOR: float = 0.18
ELLIPSE_SEMI_MINOR: float = 0.09
HEART_UNIT: float = 0.14  # image units per unit of the implicit heart curve
HEART_Y_OFFSET: float = 0.2935  # centroid of {(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0} along y

_STRIDES = np.array([6 * 40 * 32 * 32, 40 * 32 * 32, 32 * 32, 32, 1], dtype=np.int64)
_SIZES = np.array(FACTOR_SIZES, dtype=np.int64)
_GRID = (np.arange(IMAGE_SIZE, dtype=np.float64) + 0.5) / IMAGE_SIZE
_CHUNK = 256  # images per rendering chunk: ~1M pixels, a few MB per temporary array
_PACKED_BYTES = IMAGE_SIZE * IMAGE_SIZE // 8

assert int(np.prod(_SIZES)) == NUM_IMAGES


# --------------------------------------------------------------------------------------
# Factor indexing
# --------------------------------------------------------------------------------------


def factor_classes(indices) -> np.ndarray:
    """Global image indices to factor indices.

    Args:
        indices: integer scalar or array-like of global indices in ``[0, NUM_IMAGES)``.

    Returns:
        ``int64`` array of shape ``(N, 5)``; columns in :data:`FACTOR_NAMES` order.

    Raises:
        ValueError: an index is not an integer or is out of range.
    """
    idx = np.atleast_1d(np.asarray(indices))
    if idx.ndim != 1:
        raise ValueError(f"indices must be a scalar or a 1-D array, got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= NUM_IMAGES):
        raise ValueError(f"indices must lie in [0, {NUM_IMAGES}), got [{idx.min()}, {idx.max()}]")
    return (idx[:, None] // _STRIDES) % _SIZES


def _check_classes(classes) -> np.ndarray:
    cls = np.asarray(classes)
    if cls.ndim == 1 and cls.shape[0] == len(FACTOR_SIZES):
        cls = cls[None, :]
    if cls.ndim != 2 or cls.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"classes must have shape (N, {len(FACTOR_SIZES)}), got {cls.shape}")
    if cls.size and not np.issubdtype(cls.dtype, np.integer):
        raise ValueError(f"classes must be integers, got dtype {cls.dtype}")
    cls = cls.astype(np.int64, copy=False)
    if cls.size and ((cls < 0).any() or (cls >= _SIZES).any()):
        bad = np.flatnonzero(((cls < 0) | (cls >= _SIZES)).any(axis=0))
        names = ", ".join(FACTOR_NAMES[i] for i in bad)
        raise ValueError(f"classes out of range for factor(s) {names}; sizes are {FACTOR_SIZES}")
    return cls


def global_index(classes) -> np.ndarray:
    """Factor indices ``(N, 5)`` (or a single ``(5,)`` row) to global indices ``(N,)`` int64.

    Inverse of :func:`factor_classes`: the mixed-radix number
    ``((((shape * 6 + scale) * 40 + orientation) * 32 + pos_x) * 32 + pos_y)``.
    """
    return _check_classes(classes) @ _STRIDES


def _values64(classes: np.ndarray) -> np.ndarray:
    cls = _check_classes(classes)
    out = np.empty(cls.shape, dtype=np.float64)
    out[:, 0] = cls[:, 0]
    out[:, 1] = SCALE_VALUES[cls[:, 1]]
    out[:, 2] = ORIENTATION_VALUES[cls[:, 2]]
    out[:, 3] = POSITION_VALUES[cls[:, 3]]
    out[:, 4] = POSITION_VALUES[cls[:, 4]]
    return out


def factor_values(classes) -> np.ndarray:
    """Factor indices ``(N, 5)`` to factor values, ``float32`` ``(N, 5)``.

    Columns: shape id (0., 1., 2.), scale in ``[0.5, 1]``, orientation in radians in
    ``[0, 2 pi]``, pos_x and pos_y in ``[0, 1]``.
    """
    return _values64(classes).astype(np.float32)


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _square(cu, su, dx, dy) -> np.ndarray:
    # local u = cos*dx + sin*dy, v = cos*dy - sin*dx (dx, dy already divided by scale)
    u = cu * dx + su * dy
    v = cu * dy - su * dx
    np.abs(u, out=u)
    np.abs(v, out=v)
    np.maximum(u, v, out=u)
    return u <= np.float32(SQUARE_HALF_SIDE)


def _ellipse(cu, su, dx, dy) -> np.ndarray:
    a = np.float32(1.0 / ELLIPSE_SEMI_MAJOR)
    b = np.float32(1.0 / ELLIPSE_SEMI_MINOR)
    u = (cu * a) * dx + (su * a) * dy
    v = (cu * b) * dy - (su * b) * dx
    u *= u
    v *= v
    u += v
    return u <= np.float32(1.0)


def _heart(cu, su, dx, dy) -> np.ndarray:
    k = np.float32(1.0 / HEART_UNIT)
    # X = u / k, Y = offset - v / k  (y axis flipped so that the lobes point up the image)
    hx = (cu * k) * dx + (su * k) * dy
    hy = ((su * k) * dx + np.float32(HEART_Y_OFFSET)) - (cu * k) * dy
    hx *= hx  # X^2
    r = hy * hy  # Y^2
    hy *= r  # Y^3
    r += hx
    r -= np.float32(1.0)  # X^2 + Y^2 - 1
    hy *= hx  # X^2 Y^3
    hx = r * r
    hx *= r  # (X^2 + Y^2 - 1)^3
    hx -= hy
    return hx <= np.float32(0.0)


_SHAPE_FUNCS = (_square, _ellipse, _heart)


def _render_chunk(values: np.ndarray) -> np.ndarray:
    """Render a chunk of float64 factor values ``(B, 5)`` to a bool array ``(B, 64, 64)``."""
    n = values.shape[0]
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    shape_id = values[:, 0]
    inv_scale = 1.0 / values[:, 1]
    cos = np.cos(values[:, 2])
    sin = np.sin(values[:, 2])
    cx = POS_OFFSET + POS_RANGE * values[:, 3]
    cy = POS_OFFSET + POS_RANGE * values[:, 4]
    for sid, func in enumerate(_SHAPE_FUNCS):
        sel = np.flatnonzero(shape_id == sid)
        if sel.size == 0:
            continue
        s = inv_scale[sel, None]
        dx = ((_GRID[None, :] - cx[sel, None]) * s).astype(np.float32)[:, None, :]
        dy = ((_GRID[None, :] - cy[sel, None]) * s).astype(np.float32)[:, :, None]
        cu = cos[sel].astype(np.float32)[:, None, None]
        su = sin[sel].astype(np.float32)[:, None, None]
        if sel.size == n:
            out[...] = func(cu, su, dx, dy)
        else:
            out[sel] = func(cu, su, dx, dy)
    return out


def _check_values(values) -> np.ndarray:
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim == 1 and vals.shape[0] == len(FACTOR_SIZES):
        vals = vals[None, :]
    if vals.ndim != 2 or vals.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"values must have shape (N, {len(FACTOR_SIZES)}), got {vals.shape}")
    if not np.isfinite(vals).all():
        raise ValueError("values must be finite")
    if not np.isin(vals[:, 0], (0.0, 1.0, 2.0)).all():
        raise ValueError("values[:, 0] (shape) must be 0, 1 or 2")
    if (vals[:, 1] <= 0).any():
        raise ValueError("values[:, 1] (scale) must be positive")
    return vals


def _render_into(vals: np.ndarray, out: np.ndarray, packed: bool, chunk: int) -> None:
    for start in range(0, vals.shape[0], chunk):
        img = _render_chunk(vals[start : start + chunk])
        if packed:
            out[start : start + img.shape[0]] = np.packbits(img.reshape(img.shape[0], -1), axis=1)
        else:
            out[start : start + img.shape[0]] = img


def render_values(values, chunk_size: int = _CHUNK) -> np.ndarray:
    """Render sprites from continuous factor values.

    Each pixel centre ``p = ((j + 0.5) / 64, (i + 0.5) / 64)`` (column ``j``, row ``i``) is
    mapped to local shape coordinates ``(u, v) = R(-theta) (p - c) / scale`` with
    ``c = 0.2 + 0.6 * (pos_x, pos_y)``, and the pixel is foreground when the shape's implicit
    inequality holds at ``(u, v)`` (constants in the module docstring). Because ``y`` points
    down, a positive orientation turns the sprite clockwise on screen.

    Args:
        values: ``(N, 5)`` (or ``(5,)``) array of factor values as returned by
            :func:`factor_values`: shape id (0, 1 or 2), scale, orientation (radians),
            pos_x, pos_y. Orientation and positions need not lie on the dSprites grid
            (positions outside ``[0, 1]`` may clip the sprite at the frame).
        chunk_size: images rendered per vectorized chunk (bounds the temporary memory,
            about 25 bytes per pixel of a chunk).

    Returns:
        ``uint8`` array ``(N, 64, 64)`` of 0/1.
    """
    vals = _check_values(values)
    chunk = operator.index(chunk_size)
    if chunk <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk}")
    out = np.empty((vals.shape[0], IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    _render_into(vals, out, packed=False, chunk=chunk)
    return out


def render(classes, chunk_size: int = _CHUNK) -> np.ndarray:
    """Render the dSprites images with the given factor indices.

    Args:
        classes: ``(N, 5)`` (or ``(5,)``) integer factor indices.
        chunk_size: images per vectorized chunk.

    Returns:
        ``uint8`` array ``(N, 64, 64)`` of 0/1 (see :func:`render_values`).
    """
    return render_values(_values64(classes), chunk_size=chunk_size)


# --------------------------------------------------------------------------------------
# Dataset loading and caching
# --------------------------------------------------------------------------------------


def _subset_indices(n: int | None, seed: int, split: str) -> np.ndarray:
    if n is None:
        return np.arange(NUM_IMAGES, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(NUM_IMAGES)
    chosen = perm[:n] if split == "train" else perm[NUM_IMAGES - n :]
    return np.sort(chosen).astype(np.int64, copy=False)


def _cache_path(cache_dir: Path, n: int | None, seed: int, split: str) -> Path:
    if n is None:
        name = f"dsprites-r{RENDER_VERSION}-all.npz"
    else:
        name = f"dsprites-r{RENDER_VERSION}-{split}-n{n}-seed{seed}.npz"
    return cache_dir / name


_LOAD_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def _read_cache(path: Path, indices: np.ndarray) -> np.ndarray | None:
    """Packed images from ``path``, or None if absent; raises one of _LOAD_ERRORS if bad."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        version = str(data["version"])
        stored = data["indices"]
        bits = data["bits"]
    if version != RENDER_VERSION:
        raise ValueError(f"renderer version {version!r} != {RENDER_VERSION!r}")
    if not np.array_equal(stored, indices):
        raise ValueError("stored indices do not match the requested subset")
    if bits.dtype != np.uint8 or bits.shape != (indices.size, _PACKED_BYTES):
        raise ValueError(f"bad packed image array {bits.dtype} {bits.shape}")
    return bits


def _write_cache(path: Path, indices: np.ndarray, bits: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.savez_compressed(
        handle, version=np.array(RENDER_VERSION), indices=indices, bits=bits))


def _validate_args(n, seed, split) -> tuple[int | None, int]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n is not None:
        if isinstance(n, bool):
            raise ValueError(f"n must be an integer in [1, {NUM_IMAGES}] or None, got {n!r}")
        try:
            n = operator.index(n)
        except TypeError:
            raise ValueError(
                f"n must be an integer in [1, {NUM_IMAGES}] or None, got {n!r}"
            ) from None
        if not 1 <= n <= NUM_IMAGES:
            raise ValueError(f"n must be an integer in [1, {NUM_IMAGES}] or None, got {n}")
    if isinstance(seed, bool):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}") from None
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return n, seed


def load_dsprites(
    n: int | None = None,
    seed: int = 0,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load (render or read from the cache) a subset of dSprites.

    Subsets: a permutation of all global indices is drawn with
    ``np.random.default_rng(seed).permutation(NUM_IMAGES)``; ``split="train"`` takes its first
    ``n`` entries and ``split="test"`` its last ``n``, each then sorted. The same
    ``(n, seed, split)`` therefore always gives the same images, and a train subset of size
    ``n`` and a test subset of size ``m`` with the same seed are disjoint whenever
    ``n + m <= NUM_IMAGES`` (in particular for equal sizes up to 368,640).

    ``n=None`` returns all 737,280 images in global-index order (seed and split are then
    irrelevant, both splits are the whole set). Warning: that is about 12 GB as float32
    (plus about 0.4 GB of packed bits while building), and rendering takes minutes.

    Caching: the rendered subset is stored bit-packed (``np.packbits``) in a compressed
    ``.npz`` (read with ``allow_pickle=False``) named after ``(n, seed, split,
    RENDER_VERSION)`` in ``cache_dir``, else ``$VAEBENCH_CACHE``, else ``~/.cache/vaebench``.
    Files are written atomically (temp file in the same directory, then ``os.replace``). A
    cache file that cannot be read or does not match the request is rebuilt and overwritten,
    with a :class:`RuntimeWarning`. If the cache cannot be written the data are still returned,
    with a warning.

    Args:
        n: number of images, in ``[1, NUM_IMAGES]``, or None for all.
        seed: non-negative integer seed of the subset permutation.
        split: ``"train"`` or ``"test"``.
        cache_dir: cache directory (created if missing).

    Returns:
        ``(images, labels)``: images ``float32`` ``(N, 1, 64, 64)`` with values 0.0 / 1.0, and
        labels, the factor indices, ``int64`` ``(N, 5)`` in :data:`FACTOR_NAMES` order.

    Raises:
        ValueError: invalid ``n``, ``seed`` or ``split``.
    """
    n, seed = _validate_args(n, seed, split)
    indices = _subset_indices(n, seed, split)
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = _cache_path(directory, n, seed, split)

    try:
        bits = _read_cache(path, indices)
    except _LOAD_ERRORS as err:
        warnings.warn(
            f"dSprites cache file {path} is unreadable or stale ({err}); rebuilding it",
            RuntimeWarning,
            stacklevel=2,
        )
        bits = None

    if bits is None:
        bits = np.empty((indices.size, _PACKED_BYTES), dtype=np.uint8)
        _render_into(_values64(factor_classes(indices)), bits, packed=True, chunk=_CHUNK)
        try:
            _write_cache(path, indices, bits)
        except OSError as err:
            warnings.warn(
                f"could not write dSprites cache {path}: {err}", RuntimeWarning, stacklevel=2
            )

    images = torch.empty((indices.size, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.float32)
    flat = images.view(indices.size, IMAGE_SIZE * IMAGE_SIZE)
    step = 4096
    for start in range(0, indices.size, step):
        block = np.unpackbits(bits[start : start + step], axis=1, count=IMAGE_SIZE * IMAGE_SIZE)
        flat[start : start + block.shape[0]] = torch.from_numpy(block)
    labels = torch.from_numpy(factor_classes(indices))
    return images, labels
