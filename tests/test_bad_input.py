"""Bad input gets one clear error: unreadable images, infinite or NaN config values, data
outside a likelihood's support and complex arrays."""

from __future__ import annotations

import subprocess
import sys
import typing

import numpy as np
import pydantic
import pytest
import torch
from PIL import Image

import vaebench
from vaebench.benchmark.config import BenchmarkConfig
from vaebench.config import Config
from vaebench.data import ArrayData, as_data
from vaebench.data.sources import load_image_folder
from vaebench.likelihoods import build_likelihood
from vaebench.models import get_model_class, list_models
from vaebench.training.config import TrainerConfig

INF, NAN = float("inf"), float("nan")


# --- image folders ---------------------------------------------------------------------------

def _save_png(path, value=0, size=(4, 4)):
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)


def _truncated_png(path):
    noise = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    full = path.read_bytes()
    path.write_bytes(full[:len(full) // 2])


def _garbage_png(path):
    path.write_bytes(b"this is not an image" * 10)


def _folder_with_bad_images(tmp_path):
    """Three good 8 x 8 images, a truncated PNG and a .png of garbage bytes."""
    for i in range(3):
        _save_png(tmp_path / f"good{i}.png", 50 * i, (8, 8))
    _truncated_png(tmp_path / "truncated.png")
    _garbage_png(tmp_path / "garbage.png")
    return tmp_path


@pytest.mark.parametrize("bad,write", [("truncated.png", _truncated_png),
                                       ("garbage.png", _garbage_png)])
def test_unreadable_image_is_one_error_naming_the_file(tmp_path, bad, write):
    for i in range(3):
        _save_png(tmp_path / f"good{i}.png", 10 * i, (8, 8))
    write(tmp_path / bad)
    with pytest.raises(ValueError, match=rf"unreadable image .*{bad}.*skip_bad_images"):
        as_data(tmp_path)
    with pytest.raises(ValueError, match=bad):
        load_image_folder(tmp_path)


def test_skip_bad_images_warns_per_file_and_loads_the_others(tmp_path):
    folder = _folder_with_bad_images(tmp_path)
    with pytest.warns(UserWarning) as caught:
        data = as_data(folder, skip_bad_images=True)
    messages = " ".join(str(w.message) for w in caught)
    assert "truncated.png" in messages and "garbage.png" in messages
    assert len(caught) == 2
    assert data.x.shape == (3, 1, 8, 8)
    torch.testing.assert_close(data.x[:, 0, 0, 0], torch.tensor([0.0, 50.0, 100.0]) / 255)


def test_skip_bad_images_keeps_colour_mode_and_size_check(tmp_path):
    folder = _folder_with_bad_images(tmp_path)
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(folder / "red.png")
    with pytest.warns(UserWarning):
        colour = as_data(folder, skip_bad_images=True)
    assert colour.x.shape == (4, 3, 8, 8)
    torch.testing.assert_close(colour.x[2, :, 0, 0], torch.full((3,), 100 / 255))
    torch.testing.assert_close(colour.x[3, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    _save_png(folder / "small.png")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"small.png is 4 x 4 .*"
                                                                    r"share one size"):
        as_data(folder, skip_bad_images=True)


def test_skip_bad_images_with_only_bad_files_is_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"garbage")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 2 images"):
        load_image_folder(tmp_path, skip_bad_images=True)


def test_skipped_image_keeps_the_labels_of_the_others(tmp_path):
    for cls in ("a", "b", "c"):
        (tmp_path / cls).mkdir()
        _save_png(tmp_path / cls / "0.png")
    (tmp_path / "b" / "0.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="0.png"):
        data = as_data(tmp_path, skip_bad_images=True)
    assert data.labels.tolist() == [0, 2]


def test_more_images_than_the_open_file_limit(tmp_path):
    count, low = 150, 64
    for i in range(count):
        _save_png(tmp_path / f"{i:03d}.png", i)
    script = (
        "import resource, sys\n"
        "import PIL.Image, PIL.PngImagePlugin\n"
        "from vaebench.data import as_data\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, hard))\n"
        "data = as_data(sys.argv[1])\n"
        "print(len(data), round(float(data.x[-1].max()) * 255))\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(count), str(count - 1)]


# --- inf and NaN in configs ------------------------------------------------------------------

def _float_fields(config_class):
    return [name for name, field in config_class.model_fields.items()
            if float in (typing.get_args(field.annotation) or (field.annotation,))]


def _refused(make, field):
    with pytest.raises(pydantic.ValidationError) as caught:
        make()
    assert field in {str(part) for error in caught.value.errors() for part in error["loc"]}, \
        str(caught.value)
    return str(caught.value)


NON_FINITE = (INF, -INF, NAN, "inf", "-inf", "nan")


def test_trainer_config_refuses_non_finite_floats():
    config = TrainerConfig()
    for value in NON_FINITE:
        for field in ("learning_rate", "grad_clip_norm"):
            _refused(lambda field=field, value=value: TrainerConfig(**{field: value}), field)
        _refused(lambda value=value: setattr(config, "learning_rate", value), "learning_rate")
    assert config.learning_rate == 1e-3


def test_beta_and_sigma_refuse_non_finite_values():
    config_class = get_model_class("beta_vae").config_class
    for value in NON_FINITE:
        _refused(lambda v=value: config_class(input_dim=(1, 8, 8), beta=v), "beta")
        _refused(lambda v=value: vaebench.create_model("beta_vae", input_dim=(1, 8, 8), beta=v),
                 "beta")
        message = _refused(lambda v=value: config_class(input_dim=(1, 8, 8), sigma=v), "sigma")
        assert "sigma must be a positive, finite number" in message
        assert "valid string" not in message  # one clear error, not one per float | str member
    assert config_class(input_dim=(1, 8, 8), sigma="0.5", beta="2").sigma == 0.5


def test_benchmark_config_refuses_non_finite_values():
    for value in NON_FINITE:
        _refused(lambda v=value: BenchmarkConfig(models=["vae"], learning_rate=v),
                 "learning_rate")
        _refused(lambda v=value: BenchmarkConfig(models=["vae"], sigma=v), "sigma")


def test_every_float_field_of_every_model_config_refuses_inf_and_nan():
    checked = []
    for model in list_models():
        config_class = get_model_class(model).config_class
        assert issubclass(config_class, Config), model
        for field in _float_fields(config_class):
            for value in (INF, -INF, NAN):
                _refused(lambda c=config_class, f=field, v=value: c(input_dim=(1, 8, 8),
                                                                    **{f: v}), field)
            checked.append((model, field))
    assert ("beta_vae", "beta") in checked and ("vqvae", "decay") in checked
    assert {model for model, field in checked if field == "sigma"} == set(list_models())


# --- data outside a likelihood's support -----------------------------------------------------

@pytest.mark.parametrize("name", ["bernoulli", "continuous_bernoulli"])
@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_bernoulli_refuses_data_outside_zero_one_naming_the_range(name, bad):
    likelihood = build_likelihood(name, (1, 2, 2))
    x = torch.rand(20, 1, 2, 2)
    x[13, 0, 1, 0] = bad
    low, high = min(bad, float(x.min())), max(bad, float(x.max()))
    with pytest.raises(ValueError) as caught:
        likelihood.check_support(ArrayData(x, name="train"))
    message = str(caught.value)
    assert name in message and "train" in message and "[0, 1]" in message
    assert f"[{low:g}, {high:g}]" in message


@pytest.mark.parametrize("name", ["bernoulli", "continuous_bernoulli", "discretized_logistic"])
def test_data_in_support_pass(name):
    likelihood = build_likelihood(name, (1, 2, 2))
    x = torch.randint(0, 256, (30, 1, 2, 2)) / 255
    x[0], x[1] = 0.0, 1.0
    likelihood.check_support(ArrayData(x))


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_gaussian_and_laplace_accept_any_real(name):
    build_likelihood(name, (3,)).check_support(ArrayData(torch.randn(10, 3) * 1e3))


def test_discretized_logistic_refuses_values_off_the_256_levels():
    likelihood = build_likelihood("discretized_logistic", (1, 2, 2))
    x = torch.randint(0, 256, (40, 1, 2, 2)) / 255
    x[27, 0, 0, 1] = 0.5
    with pytest.raises(ValueError, match=r"discretized_logistic.*256 levels.*test.* 0\.5 in "
                                         r"sample 27"):
        likelihood.check_support(ArrayData(x, name="test"), chunk=16)
    x[27, 0, 0, 1] = 1.2
    with pytest.raises(ValueError, match=r"test has values in \[0, 1\.2\]"):
        likelihood.check_support(ArrayData(x, name="test"))


def test_discretized_logistic_accepts_float32_levels_of_float64_origin():
    levels = np.arange(256, dtype=np.float64) / 255
    data = as_data(np.tile(levels, (3, 1)).reshape(3, 1, 16, 16))
    build_likelihood("discretized_logistic", (1, 16, 16)).check_support(data)


def test_check_support_reads_memory_mapped_data_in_chunks(tmp_path):
    path = tmp_path / "x.npy"
    raw = np.random.default_rng(0).random((50, 1, 2, 2)).astype(np.float32)
    raw[41, 0, 1, 1] = 3.0
    np.save(path, raw)
    data = as_data(path, name="disk")
    assert not data.in_memory
    with pytest.raises(ValueError, match=r"disk has values in \[[0-9.e-]+, 3\]"):
        build_likelihood("bernoulli", (1, 2, 2)).check_support(data, chunk=8)
    eight_bit = tmp_path / "u8.npy"
    np.save(eight_bit, np.random.default_rng(1).integers(0, 256, (50, 1, 2, 2), dtype=np.uint8))
    build_likelihood("discretized_logistic", (1, 2, 2)).check_support(as_data(eight_bit),
                                                                      chunk=8)


# --- complex arrays ------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: np.ones((4, 3), dtype=np.complex64),
    lambda: np.ones((4, 3)) + 1j,
    lambda: torch.ones(4, 3, dtype=torch.complex64),
])
def test_complex_arrays_are_refused(make):
    with pytest.raises(ValueError, match="complex data are not supported"):
        as_data(make(), name="signal")
    with pytest.raises(ValueError, match="signal holds complex"):
        ArrayData(make(), name="signal")


def test_complex_npy_file_is_refused(tmp_path):
    np.save(tmp_path / "c.npy", np.ones((4, 3), dtype=np.complex128))
    with pytest.raises(ValueError, match="complex data are not supported"):
        as_data(tmp_path / "c.npy")
