"""Reconstruction error: per-sample sums, per-dimension means, batch-size invariance."""

import numpy as np
import pytest
import torch

from vaebench.metrics import reconstruction_error, reconstruction_mse
from vaebench.models import create_model


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = create_model("vae", input_dim=(1, 6, 5), latent_dim=3, likelihood="bernoulli")
    x = torch.rand(37, 1, 6, 5)
    return model, x


def test_matches_an_independent_computation(model_and_data):
    model, x = model_and_data
    model.train()  # the metric must switch to eval mode (posterior mean) and back
    with torch.no_grad():
        model.eval()
        z = model.encode(x).mean
        x_hat = torch.sigmoid(model.decoder(z)).reshape(x.shape)
        model.train()
    per_sample = ((x_hat - x) ** 2).sum(dim=(1, 2, 3)).double()
    out = reconstruction_error(model, x, batch_size=8)
    assert model.training
    assert out["sse"] == pytest.approx(per_sample.mean().item(), rel=1e-5)
    assert out["sse_std"] == pytest.approx(per_sample.std().item(), rel=1e-4)
    assert out["mse"] == pytest.approx(per_sample.mean().item() / 30, rel=1e-5)
    assert reconstruction_mse(model, x) == pytest.approx(out["mse"], rel=1e-6)


def test_does_not_depend_on_the_batch_size(model_and_data):
    model, x = model_and_data
    a, b = reconstruction_error(model, x, batch_size=5), reconstruction_error(model, x, 512)
    assert a["sse"] == pytest.approx(b["sse"], rel=1e-6)
    assert a["sse_std"] == pytest.approx(b["sse_std"], rel=1e-6)


def test_perfect_reconstruction_scores_zero():
    class Identity(torch.nn.Module):
        device = torch.device("cpu")

        def reconstruct(self, x):
            return x.clone()

    out = reconstruction_error(Identity(), torch.rand(10, 4))
    assert out == {"sse": 0.0, "sse_std": 0.0, "mse": 0.0}


def test_a_memory_mapped_npy_file_gives_the_same_error(model_and_data, tmp_path):
    model, x = model_and_data
    np.save(tmp_path / "x.npy", x.numpy())
    assert reconstruction_error(model, tmp_path / "x.npy") == pytest.approx(
        reconstruction_error(model, x))
