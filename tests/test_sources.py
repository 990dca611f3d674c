import numpy as np
import pytest
import torch
from PIL import Image

from vaebench.data import ArrayData, as_data, load_train_test


def test_numpy_uint8_is_scaled_and_float_kept():
    raw = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 1, 3, 4)
    data = as_data(raw)
    assert data.x.dtype == torch.float32
    torch.testing.assert_close(data.x, torch.from_numpy(raw).float() / 255)
    floats = np.random.rand(5, 3).astype(np.float64)
    torch.testing.assert_close(as_data(floats).x, torch.from_numpy(floats).float())


def test_tuple_and_labels():
    x, y = torch.rand(6, 2), torch.arange(6)
    data = as_data((x, y))
    assert torch.equal(data.labels, y) and data.sample_shape == (2,)


def test_batches_cover_every_sample_once_in_shuffled_order():
    x = torch.arange(103, dtype=torch.float32)[:, None]
    data = as_data(x)
    batches = list(data.batches(10, shuffle=True, generator=torch.Generator().manual_seed(0)))
    seen = torch.cat(batches)[:, 0]
    assert len(batches) == 11 and len(batches[-1]) == 3
    assert sorted(seen.tolist()) == list(range(103))
    assert not torch.equal(seen, x[:, 0])
    assert len(list(data.batches(10, drop_last=True))) == data.num_batches(10, True) == 10


@pytest.mark.parametrize("n, batch_size", [(512, 500), (103, 10), (91, 16), (7, 7), (5, 9)])
def test_even_batches_cover_every_sample_once_in_near_equal_sizes(n, batch_size):
    data = as_data(torch.arange(n, dtype=torch.float32)[:, None])
    order = torch.Generator().manual_seed(0)
    batches = list(data.batches(batch_size, shuffle=True, generator=order, even=True))
    sizes = [len(batch) for batch in batches]
    assert len(batches) == data.num_batches(batch_size) == -(-n // batch_size)
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= batch_size
    assert sorted(torch.cat(batches)[:, 0].tolist()) == list(range(n))
    plain = list(data.batches(batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(torch.cat(batches), torch.cat(plain))  # the same order, cut elsewhere


def test_same_generator_seed_same_order():
    data = as_data(torch.rand(50, 2))
    a = list(data.batches(7, shuffle=True, generator=torch.Generator().manual_seed(4)))
    b = list(data.batches(7, shuffle=True, generator=torch.Generator().manual_seed(4)))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_npy_is_memory_mapped(tmp_path):
    raw = (np.random.rand(40, 1, 4, 4) * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", raw)
    data = as_data(tmp_path / "x.npy")
    assert isinstance(data.x, np.memmap) and not data.in_memory
    batches = list(data.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0)))
    got = torch.cat(batches)
    assert got.dtype == torch.float32 and got.shape == (40, 1, 4, 4)
    want = torch.from_numpy(raw).float() / 255
    # every row appears exactly once
    rows = sorted(map(tuple, got.flatten(1).tolist()))
    assert rows == sorted(map(tuple, want.flatten(1).tolist()))


def test_torch_dataset():
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.full((1, 2, 2), float(i)), i

    data = as_data(Squares())
    assert data.x.shape == (5, 1, 2, 2) and data.labels.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(data.x[3], torch.full((1, 2, 2), 3.0))


def test_image_folder(tmp_path):
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            array = np.full((6, 5), 40 * i, dtype=np.uint8)
            Image.fromarray(array).save(tmp_path / cls / f"{i}.png")
    data = as_data(tmp_path)
    assert data.x.shape == (6, 1, 6, 5)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    torch.testing.assert_close(data.x[1].max(), torch.tensor(40 / 255))
    Image.fromarray(np.zeros((6, 5, 3), dtype=np.uint8)).save(tmp_path / "cats" / "rgb.png")
    assert as_data(tmp_path).x.shape == (7, 3, 6, 5)
    Image.fromarray(np.zeros((7, 5), dtype=np.uint8)).save(tmp_path / "dogs" / "big.png")
    with pytest.raises(ValueError, match=r"big.png is 5 x 7 .* share one size"):
        as_data(tmp_path)


def test_labelled_user_data_are_split_and_drawn_class_balanced(tmp_path):
    for cls, count in (("a", 40), ("b", 20), ("c", 20)):  # sorted by class, as on disk
        (tmp_path / cls).mkdir()
        for i in range(count):
            Image.fromarray(np.full((4, 4), 3 * i, dtype=np.uint8)).save(
                tmp_path / cls / f"{i:02}.png")
    for seed in range(4):
        train, test = load_train_test(str(tmp_path), train_size=16, seed=seed)
        assert torch.bincount(test.labels).tolist() == [4, 2, 2]
        assert torch.bincount(train.labels).tolist() == [8, 4, 4]
        assert torch.bincount(train.labels[:4]).tolist() == [2, 1, 1]
    again = load_train_test(str(tmp_path), train_size=16, seed=3)[0]
    assert torch.equal(again.x, train.x) and torch.equal(again.labels, train.labels)


def test_checks_name_the_problem(tmp_path):
    x = torch.rand(10, 1, 4, 4)
    as_data(x).check((1, 4, 4))
    with pytest.raises(ValueError, match=r"samples of shape \(1, 4, 4\).*input_dim is \(1, 5, 5\)"):
        as_data(x).check((1, 5, 5))
    with pytest.raises(ValueError, match="4 dimensions including the batch, expected 3"):
        as_data(x).check((16, 1))
    bad = x.clone()
    bad[7, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN values .*sample 7"):
        as_data(bad, name="train data").check()
    bad[7, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        as_data(bad).check()
    np.save(tmp_path / "nan.npy", bad.numpy())
    with pytest.raises(ValueError, match="infinite"):
        as_data(tmp_path / "nan.npy").check()
    with pytest.raises(ValueError, match="batch dimension"):
        ArrayData(torch.rand(5))
    with pytest.raises(ValueError, match="empty"):
        as_data(torch.rand(0, 3)).check()
    with pytest.raises(TypeError, match="cannot use dict"):
        as_data({"x": 1})
    with pytest.raises(ValueError, match="neither a folder of images nor a .npy"):
        as_data(tmp_path / "missing.csv")


def test_labels_must_be_whole_numbers():
    x = torch.rand(4, 3)
    assert as_data(x, np.array([0.0, 1.0, 2.0, 1.0])).labels.tolist() == [0, 1, 2, 1]
    for bad, problem in (([0.0, 1.5, 2.0, 1.0], "1.5"), ([0.0, np.nan, 1.0, 1.0], "nan"),
                         ([0.0, np.inf, 1.0, 1.0], "inf"),
                         (["a", "b", "c", "d"], "<U1")):
        with pytest.raises(ValueError, match=f"labels must be integer class indices.*{problem}"):
            as_data(x, np.array(bad), name="mine")
