"""Models of tables: every model with a continuous latent trains on one through the MLP
networks, generates a table with the original columns, saves and loads its transform as
JSON, and the CLI goes from a CSV to a synthetic CSV."""

import json

import pandas as pd
import pytest
import torch

from vaebench import VAE, create_model, load_model
from vaebench.cli import main
from vaebench.data import load_table
from vaebench.data.table_datasets import synthetic_mixed
from vaebench.data.tables import read_table, write_table
from vaebench.tabular_likelihood import column_nll, generate_table
from vaebench.training import Trainer, TrainerConfig, evaluate

NETS = {"encoder_kwargs": {"hidden": [32]}, "decoder_kwargs": {"hidden": [32]}}
CONTINUOUS = ["ae", "vae", "beta_vae", "beta_tc_vae", "dip_vae", "factor_vae", "info_vae",
              "wae", "rae_l2", "rae_gp", "iwae", "miwae", "ciwae", "piwae", "vamp",
              "vae_iaf", "vae_linnf", "hvae", "rhvae", "svae", "poincare_vae",
              "adversarial_ae", "vaegan"]


@pytest.fixture(scope="module")
def table():
    return load_table(synthetic_mixed(200))


def _fit(model, data, epochs=1):
    config = TrainerConfig(epochs=epochs, batch_size=50, progress=False, device="cpu")
    return Trainer(model, config).fit(data)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_models_with_a_continuous_latent_train_on_a_table(name, table):
    model = create_model(name, **table.model_options(), latent_dim=3, **NETS)
    history = _fit(model, table)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in history[0].items()
               if k.startswith("train_"))
    frame = model.generate(4)
    assert list(frame.columns) == list(synthetic_mixed(1).columns)


@pytest.mark.parametrize("column_sigma", ["optimal", "learned"])
def test_training_lowers_the_loss_on_synthetic_mixed(column_sigma):
    train = load_table(synthetic_mixed(1000))
    test = load_table(synthetic_mixed(300, seed=1), schema=train.schema)
    options = {**train.model_options(), "latent_dim": 4, **NETS, "likelihood_kwargs": {
        **train.likelihood_kwargs, "column_sigma": column_sigma}}
    untrained = VAE(**options)
    model = VAE(**options)
    model.load_state_dict(untrained.state_dict())
    history = _fit(model, train, epochs=6)
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 1.0
    assert evaluate(model, test)["loss"] < evaluate(untrained, test)["loss"] - 1.0
    parts = column_nll(model, test)
    assert set(parts) >= {"height", "weight:missing", "group", "visits", "joined"}


def test_generate_returns_the_original_columns_dtypes_and_labels(table):
    model = VAE(**table.model_options(), latent_dim=3, **NETS)
    frame, original = model.generate(300), synthetic_mixed(200)
    assert (frame.dtypes == original.dtypes).all()
    assert set(frame["group"].dropna()) <= {"a", "b", "c"}
    assert list(frame["plan"].cat.categories) == ["basic", "plus", "pro"]
    assert frame["plan"].cat.ordered and frame["weight"].isna().any()
    assert (frame["visits"] >= 0).all() and (frame["height"] == frame["height"].round(1)).all()
    seeded = generate_table(model, 20, seed=5)
    pd.testing.assert_frame_equal(seeded, generate_table(model, 20, seed=5))


def test_save_and_load_keep_the_transform_as_json(tmp_path, table):
    model = VAE(**table.model_options(), latent_dim=3, **NETS)
    _fit(model, table)
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json",
                                                                  "model.safetensors"]
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["config"]["likelihood_kwargs"]["table"] == table.schema.to_dict()
    loaded = load_model(tmp_path / "m")
    assert loaded.likelihood.table == table.schema
    model.eval()
    with torch.no_grad():
        params = model.decode(model.encode(table.x).mean)
        torch.testing.assert_close(loaded.likelihood.nll(params, table.x),
                                   model.likelihood.nll(params, table.x))
    pd.testing.assert_frame_equal(generate_table(loaded, 30, seed=1),
                                  generate_table(model, 30, seed=1))


def test_cli_trains_on_a_csv_and_samples_a_csv(tmp_path, capsys):
    write_table(synthetic_mixed(300), tmp_path / "people.csv")
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "people.csv"), "--model", "vae",
                 "--latent-dim", "3", "--epochs", "2", "--iwae-k", "4", "--output", str(out),
                 "--no-progress", "--option", 'encoder_kwargs={"hidden": [32]}']) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["likelihood"]["dim"] == 9  # bits per column of the table
    assert sum(metrics["eval_column_nll"].values()) > 0
    assert main(["sample", "--model", str(out / "model"), "-n", "50",
                 "--output", str(tmp_path / "synthetic.csv")]) == 0
    synthetic, original = read_table(tmp_path / "synthetic.csv"), read_table(
        tmp_path / "people.csv")
    assert len(synthetic) == 50 and list(synthetic.columns) == list(original.columns)
    assert (synthetic.dtypes == original.dtypes).all()
    assert set(synthetic["plan"]) <= {"basic", "plus", "pro"}
    capsys.readouterr()
    assert main(["train", "--dataset", str(tmp_path / "people.csv"), "--likelihood",
                 "gaussian", "--output", str(tmp_path / "other")]) == 2
    assert "'mixed' likelihood" in capsys.readouterr().err
    assert main(["sample", "--model", str(out / "model"), "--npy", str(tmp_path / "x.npy")]) == 2
    assert "--output FILE.csv" in capsys.readouterr().err


def test_bundled_tables_train_from_the_cli(tmp_path):
    out = tmp_path / "wine"
    assert main(["train", "--dataset", "wine", "--model", "vae", "--latent-dim", "2",
                 "--epochs", "1", "--iwae-k", "2", "--output", str(out), "--no-progress",
                 "--option", 'likelihood_kwargs={"column_sigma": "learned"}']) == 0
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["training_data"]["dataset"] == "wine"
    model = load_model(out / "model")
    assert model.config.likelihood == "mixed" and model.likelihood.column_sigma == "learned"
    assert model.likelihood.joint is None
    default = tmp_path / "default"
    assert main(["train", "--dataset", "wine", "--model", "vae", "--latent-dim", "2",
                 "--epochs", "1", "--iwae-k", "2", "--output", str(default),
                 "--no-progress"]) == 0
    joint = load_model(default / "model").likelihood
    assert joint.column_sigma == "conditional"
    assert len(joint.given_entries) == 3  # the class's one-hot
    assert len(joint.joint_entries) == 13  # the 13 measurements, two of them counts
