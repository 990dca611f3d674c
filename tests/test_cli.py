import json

import pytest

from vaebench import load_model
from vaebench.cli import main


def test_train_writes_report_and_loss_improves(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "vae", "--dataset", "digits", "--latent-dim", "4",
                 "--epochs", "4", "--likelihood", "bernoulli", "--output", str(out),
                 "--no-progress", "--checkpoint-every", "2"])
    assert code == 0
    for name in ("metrics.json", "history.json", "reconstructions.png", "samples.png",
                 "loss_curve.png", "model/config.json", "model/model.safetensors",
                 "checkpoints/epoch_0004/trainer_state.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["eval_loss"] < history[0]["eval_loss"]
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_recon_loss"]
                                                 + metrics["eval_terms"]["kl"], rel=1e-6)
    assert 0 < metrics["eval_mse_per_dim"] < 0.2
    assert metrics["eval_sse_per_sample"] == pytest.approx(64 * metrics["eval_mse_per_dim"])
    # honest likelihood figures: the K=100 bound is at least the ELBO (up to noise)
    assert metrics["test_log_likelihood_k100"] >= metrics["test_elbo"] - 0.5
    assert metrics["test_elbo"] == pytest.approx(-metrics["eval_loss"], rel=0.05)
    assert load_model(out / "model").config.likelihood == "bernoulli"
    assert "report in" in capsys.readouterr().out


def test_user_npy_dataset(tmp_path):
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.rand(200, 6).astype(np.float32))
    out = tmp_path / "run"
    assert main(["train", "--model", "ae", "--dataset", str(tmp_path / "x.npy"),
                 "--latent-dim", "2", "--epochs", "1", "--output", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 180 and metrics["n_eval"] == 20
    assert not (out / "samples.png").exists()  # not images
    assert "test_elbo" not in metrics  # an AE has no likelihood


def test_errors_are_reported(tmp_path, capsys):
    assert main(["train", "--model", "nope", "--dataset", "digits",
                 "--output", str(tmp_path)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar", "--output", str(tmp_path)]) == 2
    assert "cifar" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--latent-dim", "0",
                 "--output", str(tmp_path)]) == 2
    assert "latent_dim" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--likelihood", "bernoulli", "--sigma",
                 "optimal", "--output", str(tmp_path)]) == 2
    assert "sigma" in capsys.readouterr().err


def test_help_and_list_models(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--latent-dim" in capsys.readouterr().out
    assert main(["list-models"]) == 0
    listed = capsys.readouterr().out
    assert "vae " in listed and "ae " in listed


def test_dsprites_generates_only_what_the_run_uses(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "beta_vae", "--dataset", "dsprites", "--train-size", "300",
                 "--latent-dim", "3", "--epochs", "1", "--likelihood", "bernoulli",
                 "--output", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 300 and metrics["n_eval"] == 1000
