"""The likelihood chosen from the data when none is named (``likelihood="auto"``): the exact
Bernoulli for 0/1 data, a Gaussian with the data's scale otherwise; models never take it."""

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from vaebench import create_model, load_model
from vaebench.benchmark import BenchmarkConfig
from vaebench.cli import main
from vaebench.likelihoods import likelihood_for_data


def test_binary_data_get_the_bernoulli_and_anything_else_a_scaled_gaussian():
    binary = torch.bernoulli(torch.full((100, 1, 4, 4), 0.3))
    assert likelihood_for_data(binary) == ("bernoulli", 1.0)
    grey = binary.clone()
    grey[-1, 0, 3, 3] = 0.5  # one grey value, in the last chunk read
    assert likelihood_for_data(grey, chunk=16) == ("gaussian", "data")
    assert likelihood_for_data(torch.randn(10, 3)) == ("gaussian", "data")


def test_a_model_needs_a_named_likelihood():
    with pytest.raises(ValueError, match="unknown likelihood 'auto'"):
        create_model("vae", input_dim=(4,), likelihood="auto")


def test_benchmarks_default_to_auto_and_keep_sigma_for_named_likelihoods():
    assert BenchmarkConfig(models=["vae"]).likelihood == "auto"
    with pytest.raises(ValidationError, match="name a likelihood to set sigma"):
        BenchmarkConfig(models=["vae"], sigma="learned")
    assert BenchmarkConfig(models=["vae"], likelihood="gaussian", sigma="learned").sigma == \
        "learned"


def test_train_chooses_from_the_data_unless_told(tmp_path, capsys):
    np.save(tmp_path / "binary.npy", (np.random.default_rng(0).random((120, 6)) > 0.5)
            .astype(np.float32))
    runs = {"binary": ["--dataset", str(tmp_path / "binary.npy")],
            "digits": ["--dataset", "digits", "--train-size", "200"],
            "named": ["--dataset", "digits", "--train-size", "200", "--likelihood", "gaussian"]}
    for name, data in runs.items():
        out = tmp_path / name
        assert main(["train", "--model", "vae", *data, "--latent-dim", "2", "--epochs", "1",
                     "--iwae-k", "2", "--output", str(out)]) == 0
    chosen = {name: load_model(tmp_path / name / "model").config for name in runs}
    assert chosen["binary"].likelihood == "bernoulli"
    assert (chosen["digits"].likelihood, chosen["digits"].sigma) == ("gaussian", "data")
    assert (chosen["named"].likelihood, chosen["named"].sigma) == ("gaussian", 1.0)
    assert "likelihood gaussian with sigma 'data' (chosen from the data" in \
        capsys.readouterr().err
    metrics = json.loads((tmp_path / "digits" / "metrics.json").read_text())
    assert metrics["likelihood"]["likelihood"] == "gaussian"
    assert main(["train", "--dataset", "digits", "--sigma", "learned", "--output",
                 str(tmp_path / "bad")]) == 2
    assert "name a likelihood to set sigma='learned'" in capsys.readouterr().err
