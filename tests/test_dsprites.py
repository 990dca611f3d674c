"""Tests for the procedural dSprites module (vaebench.data.dsprites)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vaebench.data import dsprites as ds

STEP_PX = 0.6 / 31 * 64  # expected centre displacement per position step, in pixels


def _classes(shape, scale, orient, px, py) -> np.ndarray:
    """Cartesian product of the given factor indices, as an (N, 5) int64 array."""
    axes = [np.atleast_1d(np.asarray(a, dtype=np.int64)) for a in (shape, scale, orient, px, py)]
    grid = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.ravel() for g in grid], axis=1)


def _com(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre of mass (row, column) of each binary image in pixel index units."""
    imgs = images.astype(np.float64)
    mass = imgs.sum(axis=(1, 2))
    rows = (imgs.sum(axis=2) * np.arange(64)).sum(axis=1) / mass
    cols = (imgs.sum(axis=1) * np.arange(64)).sum(axis=1) / mass
    return rows, cols


# ----------------------------------------------------------------------------- indexing


def test_constants():
    assert ds.FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert ds.FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert ds.NUM_IMAGES == 737280 == math.prod(ds.FACTOR_SIZES)
    np.testing.assert_allclose(ds.ORIENTATION_VALUES, np.linspace(0, 2 * np.pi, 40))


def test_index_round_trip():
    rng = np.random.default_rng(123)
    idx = rng.integers(0, ds.NUM_IMAGES, size=5000)
    classes = ds.factor_classes(idx)
    assert classes.dtype == np.int64 and classes.shape == (5000, 5)
    assert (classes >= 0).all() and (classes < np.array(ds.FACTOR_SIZES)).all()
    back = ds.global_index(classes)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, idx)

    random_classes = np.stack([rng.integers(0, s, size=1000) for s in ds.FACTOR_SIZES], axis=1)
    np.testing.assert_array_equal(
        ds.factor_classes(ds.global_index(random_classes)), random_classes
    )
    # all indices map to distinct class tuples
    every = ds.factor_classes(np.arange(ds.NUM_IMAGES))
    np.testing.assert_array_equal(ds.global_index(every), np.arange(ds.NUM_IMAGES))


def test_factor_order_pos_y_fastest():
    c = ds.factor_classes([0, 1, 32, 32 * 32, ds.NUM_IMAGES - 1])
    np.testing.assert_array_equal(c[0], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(c[1], [0, 0, 0, 0, 1])  # only pos_y changes
    np.testing.assert_array_equal(c[2], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(c[3], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(c[4], [2, 5, 39, 31, 31])
    expected = (((1 * 6 + 2) * 40 + 3) * 32 + 4) * 32 + 5
    assert ds.global_index([1, 2, 3, 4, 5]).tolist() == [expected]


def test_index_errors():
    with pytest.raises(ValueError, match="indices"):
        ds.factor_classes([-1])
    with pytest.raises(ValueError, match="indices"):
        ds.factor_classes([ds.NUM_IMAGES])
    with pytest.raises(ValueError, match="orientation"):
        ds.global_index([[0, 0, 40, 0, 0]])
    with pytest.raises(ValueError, match="shape"):
        ds.global_index(np.zeros((3, 4), dtype=np.int64))


def test_factor_values():
    c = np.array([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31], [1, 3, 10, 16, 7]])
    v = ds.factor_values(c)
    assert v.dtype == np.float32 and v.shape == (3, 5)
    np.testing.assert_allclose(v[0], [0, 0.5, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(v[1], [2, 1.0, 2 * np.pi, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(
        v[2], [1, 0.5 + 0.5 * 3 / 5, 2 * np.pi * 10 / 39, 16 / 31, 7 / 31], rtol=1e-6
    )


# ----------------------------------------------------------------------------- rendering


def test_render_binary_and_never_empty():
    rng = np.random.default_rng(5)
    idx = rng.choice(ds.NUM_IMAGES, 1500, replace=False)
    imgs = ds.render(ds.factor_classes(idx))
    assert imgs.dtype == np.uint8 and imgs.shape == (1500, 64, 64)
    assert set(np.unique(imgs).tolist()) <= {0, 1}
    assert (imgs.reshape(1500, -1).sum(axis=1) > 0).all()
    # smallest scale, every shape and orientation, at corners and the middle
    small = ds.render(_classes(range(3), 0, range(40), [0, 15, 31], [0, 31]))
    assert (small.reshape(len(small), -1).sum(axis=1) >= 20).all()


def test_render_chunking_and_single_row():
    c = ds.factor_classes(np.arange(0, ds.NUM_IMAGES, 997))
    full = ds.render(c)
    np.testing.assert_array_equal(ds.render(c, chunk_size=7), full)
    np.testing.assert_array_equal(ds.render(c[5]), full[5:6])
    np.testing.assert_array_equal(ds.render_values(ds.factor_values(c)), full)


def test_no_border_contact_at_scale_one():
    corners = [0, 31]
    imgs = ds.render(_classes(range(3), 5, range(40), corners, corners))
    border = np.concatenate([imgs[:, 0, :], imgs[:, -1, :], imgs[:, :, 0], imgs[:, :, -1]], axis=1)
    assert border.sum() == 0
    # the sprites do come close to the frame (within 3 pixels) at these positions
    near = np.concatenate([imgs[:, :4, :], imgs[:, -4:, :]], axis=1).sum(axis=(1, 2))
    assert (near.reshape(3, 40, 4) > 0).any(axis=1).all()
    # off-grid orientations too (every degree)
    theta = np.deg2rad(np.arange(360.0))
    vals = np.array(
        [[s, 1.0, t, x, y] for s in range(3) for t in theta for x in (0.0, 1.0) for y in (0.0, 1.0)]
    )
    imgs = ds.render_values(vals)
    assert imgs[:, 0, :].sum() + imgs[:, -1, :].sum() == 0
    assert imgs[:, :, 0].sum() + imgs[:, :, -1].sum() == 0


def test_extreme_positions_reach_near_the_frame():
    # at scale 1 a square at pos 0 spans to within a few pixels of the border
    img = ds.render([0, 5, 0, 0, 0])[0]
    rows, cols = np.nonzero(img)
    assert 1 <= rows.min() <= 6 and 1 <= cols.min() <= 6
    img = ds.render([0, 5, 0, 31, 31])[0]
    rows, cols = np.nonzero(img)
    assert 57 <= rows.max() <= 62 and 57 <= cols.max() <= 62


def test_pos_x_moves_centre_of_mass_right():
    c = _classes(range(3), [2, 5], [0, 7, 23], range(32), 10)
    imgs = ds.render(c).reshape(3, 2, 3, 32, 64, 64)
    rows, cols = _com(imgs.reshape(-1, 64, 64))
    rows = rows.reshape(3, 2, 3, 32)
    cols = cols.reshape(3, 2, 3, 32)
    steps = np.diff(cols, axis=-1)
    assert (steps > 0).all()
    np.testing.assert_allclose(steps.mean(), STEP_PX, atol=0.02)
    assert np.abs(steps - STEP_PX).max() < 0.6
    np.testing.assert_allclose(cols[..., -1] - cols[..., 0], 31 * STEP_PX, atol=0.6)
    # the row of the centre of mass does not move with pos_x
    assert np.abs(rows - rows[..., :1]).max() < 0.3


def test_pos_y_moves_centre_of_mass_down():
    c = _classes(range(3), 4, 3, 20, range(32))
    rows, cols = _com(ds.render(c))
    rows = rows.reshape(3, 32)
    steps = np.diff(rows, axis=-1)
    assert (steps > 0).all()
    np.testing.assert_allclose(steps.mean(), STEP_PX, atol=0.02)
    assert np.abs(cols - cols[0]).max() < 1.0


def test_area_grows_as_scale_squared():
    # average over sub-pixel offsets to remove the rasterisation bias: all 32 pos_x, each with
    # a different pos_y (so x and y offsets are decorrelated)
    c = _classes(range(3), range(6), [0, 5, 13], range(32), 0)
    c[:, 4] = (11 * c[:, 3] + 5) % 32
    per_image = ds.render(c).reshape(3, 6, 3, 32, -1).sum(axis=-1)
    area = per_image.astype(np.float64).mean(axis=-1)
    assert (np.diff(area, axis=1) > 0).all()
    ratio = area / area[:, -1:, :]
    expected = (ds.SCALE_VALUES / ds.SCALE_VALUES[-1])[None, :, None] ** 2
    np.testing.assert_allclose(ratio, np.broadcast_to(expected, ratio.shape), rtol=0.05)
    # single images: 0.5 -> 1.0 scale multiplies the area by about 4
    single = per_image[..., 0].astype(np.float64)
    assert np.all(np.abs(single[:, -1] / single[:, 0] - 4.0) < 0.6)


def test_shape_sizes_at_scale_one():
    areas = ds.render(_classes(range(3), 5, 0, 15, 15)).reshape(3, -1).sum(axis=1)
    px = 64 * 64
    np.testing.assert_allclose(areas[0], (2 * ds.SQUARE_HALF_SIDE) ** 2 * px, rtol=0.1)
    ellipse = np.pi * ds.ELLIPSE_SEMI_MAJOR * ds.ELLIPSE_SEMI_MINOR * px
    np.testing.assert_allclose(areas[1], ellipse, rtol=0.1)
    # all three shapes of comparable size
    assert areas.max() / areas.min() < 1.6


def test_square_quarter_turn_symmetry_and_ellipse_elongation():
    vals0 = np.array([[s, 1.0, 0.0, x, y] for s in (0, 1) for x, y in [(0.3, 0.6), (0.5, 0.5)]])
    vals90 = vals0.copy()
    vals90[:, 2] = np.pi / 2
    a = ds.render_values(vals0).astype(int)
    b = ds.render_values(vals90).astype(int)
    diff = np.abs(a - b).reshape(4, -1).sum(axis=1)
    assert (diff[:2] <= 4).all()  # square: same image
    assert (diff[2:] > 100).all()  # ellipse: clearly different
    # ellipse at orientation 0 is wide, at pi/2 tall
    for img, wide in ((a[2], True), (b[2], False)):
        rows, cols = np.nonzero(img)
        w, h = np.ptp(cols) + 1, np.ptp(rows) + 1
        assert (w / h > 1.7) if wide else (h / w > 1.7)
    # on the grid, orientation index 0 and 39 (= 2 pi) give the same images
    c0 = _classes(range(3), [0, 5], 0, [0, 31], 7)
    c39 = c0.copy()
    c39[:, 2] = 39
    assert np.abs(ds.render(c0).astype(int) - ds.render(c39).astype(int)).sum() <= 4 * len(c0)


def test_heart_points_down_and_rotates():
    img = ds.render([2, 5, 0, 15, 15])[0]
    rows, cols = np.nonzero(img)
    r, c = _com(img[None])
    r, c = r[0], c[0]
    assert (rows.max() - r) - (r - rows.min()) > 1.5  # tip farther below than lobes above
    # left-right mirror symmetric about its centre column (up to a pixel of rasterisation)
    assert abs((cols.max() - c) - (c - cols.min())) < 1.0
    # a half turn puts the tip at the top
    flipped = ds.render_values([2, 1.0, np.pi, 15 / 31, 15 / 31])[0]
    rows, _ = np.nonzero(flipped)
    assert (r - rows.min()) - (rows.max() - r) > 1.5
    # rotation about the centre of mass: it barely moves under rotation
    turned = ds.render_values([[2, 1.0, t, 0.5, 0.5] for t in np.linspace(0, 2 * np.pi, 12)])
    rr, cc = _com(turned)
    assert np.ptp(rr) < 0.6 and np.ptp(cc) < 0.6


def test_render_rejects_bad_input():
    with pytest.raises(ValueError):
        ds.render([[3, 0, 0, 0, 0]])
    with pytest.raises(ValueError):
        ds.render_values([[0.5, 1.0, 0.0, 0.5, 0.5]])
    with pytest.raises(ValueError):
        ds.render_values([[0, 0.0, 0.0, 0.5, 0.5]])


# ----------------------------------------------------------------------------- load_dsprites


def test_load_shapes_values_and_labels(tmp_path):
    images, labels = ds.load_dsprites(n=200, seed=1, cache_dir=tmp_path)
    assert images.dtype == torch.float32 and images.shape == (200, 1, 64, 64)
    assert labels.dtype == torch.int64 and labels.shape == (200, 5)
    assert set(torch.unique(images).tolist()) == {0.0, 1.0}
    assert (labels >= 0).all()
    assert (labels < torch.tensor(ds.FACTOR_SIZES)).all()
    idx = ds.global_index(labels.numpy())
    assert (np.diff(idx) > 0).all()  # sorted, distinct
    # images are the renders of their labels
    np.testing.assert_array_equal(images[:, 0].numpy(), ds.render(labels.numpy()))
    # the subset is the first n of the seeded permutation
    perm = np.random.default_rng(1).permutation(ds.NUM_IMAGES)
    np.testing.assert_array_equal(idx, np.sort(perm[:200]))


def test_load_determinism_and_splits(tmp_path):
    a_img, a_lab = ds.load_dsprites(n=300, seed=7, cache_dir=tmp_path / "a")
    b_img, b_lab = ds.load_dsprites(n=300, seed=7, cache_dir=tmp_path / "b")
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    c_img, c_lab = ds.load_dsprites(n=300, seed=8, cache_dir=tmp_path / "a")
    assert not torch.equal(a_lab, c_lab)
    assert not torch.equal(a_img, c_img)
    t_img, t_lab = ds.load_dsprites(n=300, seed=7, split="test", cache_dir=tmp_path / "a")
    assert t_img.shape == (300, 1, 64, 64)
    train_idx = set(ds.global_index(a_lab.numpy()).tolist())
    test_idx = set(ds.global_index(t_lab.numpy()).tolist())
    assert len(test_idx) == 300
    assert train_idx.isdisjoint(test_idx)


def test_cache_is_written_and_read(tmp_path, monkeypatch):
    images, labels = ds.load_dsprites(n=100, seed=3, cache_dir=tmp_path)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    assert "n100" in files[0].name and "seed3" in files[0].name and "train" in files[0].name
    with np.load(files[0], allow_pickle=False) as data:
        assert data["bits"].dtype == np.uint8 and data["bits"].shape == (100, 512)

    def boom(*args, **kwargs):
        raise AssertionError("rendered although a cache file exists")

    monkeypatch.setattr(ds, "_render_chunk", boom)
    images2, labels2 = ds.load_dsprites(n=100, seed=3, cache_dir=tmp_path)
    assert torch.equal(images, images2) and torch.equal(labels, labels2)
    # a different key is not served from that file
    with pytest.raises(AssertionError, match="rendered"):
        ds.load_dsprites(n=100, seed=3, split="test", cache_dir=tmp_path)


@pytest.mark.parametrize("garbage", [b"not a numpy file at all" * 10, b"", "truncate"])
def test_corrupt_cache_is_rebuilt(tmp_path, garbage):
    images, labels = ds.load_dsprites(n=64, seed=2, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    if garbage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(garbage)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        images2, labels2 = ds.load_dsprites(n=64, seed=2, cache_dir=tmp_path)
    assert torch.equal(images, images2) and torch.equal(labels, labels2)
    # the file was overwritten with a valid one, and no temp files are left behind
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with np.load(path, allow_pickle=False) as data:
        assert data["bits"].shape == (64, 512)


@pytest.mark.parametrize("stale", ["indices", "version", "bits_shape", "missing_key"])
def test_stale_cache_with_wrong_contents_is_rebuilt(tmp_path, stale):
    images, _ = ds.load_dsprites(n=32, seed=4, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if stale == "indices":
        arrays["indices"] = arrays["indices"] + 1
    elif stale == "version":
        arrays["version"] = np.array("0-old")
    elif stale == "bits_shape":
        arrays["bits"] = arrays["bits"][:10]
    else:
        del arrays["bits"]
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        images2, _ = ds.load_dsprites(n=32, seed=4, cache_dir=tmp_path)
    assert torch.equal(images, images2)
    with np.load(path, allow_pickle=False) as data:
        assert str(data["version"]) == ds.RENDER_VERSION and data["bits"].shape == (32, 512)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    env_dir = tmp_path / "env_cache"
    monkeypatch.setenv("VAEBENCH_CACHE", str(env_dir))
    assert ds.default_cache_dir() == env_dir
    ds.load_dsprites(n=16, seed=0)
    assert len(list(env_dir.glob("*.npz"))) == 1
    # an explicit cache_dir takes precedence over the environment variable
    explicit = tmp_path / "explicit"
    ds.load_dsprites(n=16, seed=0, cache_dir=explicit)
    assert len(list(explicit.glob("*.npz"))) == 1
    assert len(list(env_dir.glob("*.npz"))) == 1
    monkeypatch.delenv("VAEBENCH_CACHE")
    assert ds.default_cache_dir() == Path("~/.cache/vaebench").expanduser()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": -5}, "n"),
        ({"n": ds.NUM_IMAGES + 1}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": 10, "split": "valid"}, "split"),
        ({"n": 10, "seed": -1}, "seed"),
    ],
)
def test_load_errors(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        ds.load_dsprites(cache_dir=tmp_path, **kwargs)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
