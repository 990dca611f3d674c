"""Faults lose nothing: resume keeps the best model, saves are atomic as whole folders,
divergence is caught early and told plainly, the CLI refuses to clobber a run."""

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch
from test_trainer import _config as _trainer_config
from test_trainer import _model

from vaebench import Trainer, create_model, load_model
from vaebench.cli import main
from vaebench.data import load_dataset
from vaebench.models import VAE
from vaebench.training.trainer import TrainingDiverged


@pytest.fixture(scope="module")
def digits():
    x_train, _ = load_dataset("digits", "train")
    return x_train[:512]


def _config(**kw):
    return _trainer_config(**{"epochs": 4, **kw})


def _weights_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Interrupt(Exception):
    pass


def test_resume_keeps_a_best_model_from_before_the_checkpoint(digits, tmp_path):
    # Trained on blank images, the model moves away from the all-ones eval images: the
    # eval loss rises every epoch, so the best epoch (1) comes before the checkpoint (2).
    blank, ones = torch.zeros_like(digits), torch.ones(64, 1, 8, 8)
    full = _model()
    trainer = Trainer(full, _config(output_dir=str(tmp_path / "full")))
    history = trainer.fit(blank, ones)
    assert trainer.best_epoch == 1 < 2
    assert history[-1]["eval_loss"] > history[0]["eval_loss"]

    def stop_after_epoch_2(record):
        if record["epoch"] == 3:
            raise _Interrupt

    first = Trainer(_model(), _config(checkpoint_every=2, output_dir=str(tmp_path / "cut")),
                    callbacks=[stop_after_epoch_2])
    with pytest.raises(_Interrupt):
        first.fit(blank, ones)
    resumed = _model(seed=9)  # different init: everything comes from the checkpoint
    again = Trainer(resumed, _config(output_dir=str(tmp_path / "cut")))
    again.fit(blank, ones, resume_from=tmp_path / "cut" / "checkpoints" / "epoch_0002")
    assert again.best_epoch == 1
    assert _weights_equal(resumed.state_dict(), full.state_dict())
    saved = load_model(tmp_path / "cut" / "model").state_dict()
    assert _weights_equal(saved, load_model(tmp_path / "full" / "model").state_dict())
    assert _weights_equal(saved, full.state_dict())


def test_resume_refuses_a_checkpoint_of_another_config(digits, tmp_path):
    Trainer(_model(), _config(epochs=1, output_dir=str(tmp_path))).fit(digits)
    other = create_model("vae", input_dim=(1, 8, 8), latent_dim=3, likelihood="bernoulli",
                         encoder_kwargs={"hidden": [64]}, decoder_kwargs={"hidden": [64]})
    with pytest.raises(ValueError, match="latent_dim: 4 there, 3 here"):
        Trainer(other, _config(epochs=2)).fit(
            digits, resume_from=tmp_path / "checkpoints" / "epoch_0001")
    state = tmp_path / "checkpoints" / "epoch_0001" / "trainer_state.json"
    payload = json.loads(state.read_text())
    payload["history"] = "not a list"
    state.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="field 'history' must be a list of epoch records"):
        Trainer(_model(), _config(epochs=2)).fit(digits, resume_from=state.parent)


class _BlowsUpAtUpdate(VAE):
    """A VAE whose KL term becomes infinite at one known update."""

    def __init__(self, *args, at: int, **kw):
        super().__init__(*args, **kw)
        self.at, self.updates = at, 0

    def objective(self, x, **inputs):
        out = super().objective(x, **inputs)
        self.updates += self.training
        if self.updates >= self.at:
            out.terms["kl"] = out.terms["kl"] * float("inf")
        return out


def _blowing_model(at):
    torch.manual_seed(0)
    cfg = VAE.config_class(input_dim=(1, 8, 8), latent_dim=4, likelihood="bernoulli",
                           encoder_kwargs={"hidden": [64]}, decoder_kwargs={"hidden": [64]})
    return _BlowsUpAtUpdate(cfg, at=at)


def test_divergence_is_caught_within_log_every_steps_and_named(digits, tmp_path):
    steps = 8  # 512 samples / 64
    model = _blowing_model(at=steps + 3)  # epoch 2, step 3
    trainer = Trainer(model, _config(log_every=4, output_dir=str(tmp_path)))
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit(digits, digits[:64])
    message = str(err.value)
    assert "epoch 2, step 3 of 8" in message
    assert "kl = inf" in message and "recon =" not in message
    assert str(tmp_path / "model") in message and "(epoch 1)" in message
    assert model.updates == steps + 4  # stopped at the check, not at the epoch's end
    # The best model is on disk and back in memory, with finite weights.
    saved = load_model(tmp_path / "model")
    assert all(torch.isfinite(p).all() for p in saved.parameters())
    assert _weights_equal(saved.state_dict(), model.state_dict())


def test_divergence_in_the_cli_is_one_line(tmp_path, capsys):
    code = main(["train", "--dataset", "digits", "--epochs", "2", "--no-progress",
                 "--optimizer", "sgd", "--lr", "1e12", "--output", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("vaebench: error: training of vae diverged in epoch 1, step")
    assert err.count("\n") == 1


def test_the_cli_refuses_to_overwrite_a_run_and_resumes_one(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "vae", "--dataset", "digits", "--train-size", "256",
            "--latent-dim", "4", "--no-progress", "--checkpoint-every", "1",
            "--output", str(out)]
    assert main([*args, "--epochs", "3"]) == 0
    full = load_model(out / "model").state_dict()
    history = json.loads((out / "history.json").read_text())

    assert main([*args, "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "--resume" in err
    assert json.loads((out / "history.json").read_text()) == history  # untouched

    # Resume from epoch 1 (a folder) and from the latest checkpoint (no value).
    cut = tmp_path / "cut"
    assert main([*args[:-1], str(cut), "--epochs", "1"]) == 0
    assert main([*args[:-1], str(cut), "--epochs", "3", "--resume"]) == 0
    assert _weights_equal(load_model(cut / "model").state_dict(), full)
    resumed = json.loads((cut / "history.json").read_text())
    assert [r["eval_loss"] for r in resumed] == [r["eval_loss"] for r in history]

    assert main([*args, "--epochs", "1", "--overwrite"]) == 0
    assert len(json.loads((out / "history.json").read_text())) == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001"]
    assert main([*args[:-1], str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_a_save_refuses_to_replace_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        _model().save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


_SAVER = textwrap.dedent("""
    import sys, torch, vaebench
    from vaebench import files
    if sys.argv[2] == "fallback":  # the portable path: no atomic exchange of folders
        files._exchange = lambda a, b: False
    target = sys.argv[1]
    torch.manual_seed(0)
    models = [vaebench.create_model("vae", input_dim=(1, 8, 8), latent_dim=2),
              vaebench.create_model("ae", input_dim=(1, 8, 8), latent_dim=5,
                                    encoder_kwargs={"hidden": [16]},
                                    decoder_kwargs={"hidden": [16, 16]})]
    for index, model in enumerate(models):
        model.save(f"{target}_ref{index}")
    print("ready", flush=True)
    i = 0
    while True:
        models[i % 2].save(target)
        i += 1
""")


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_a_kill_at_any_moment_leaves_a_complete_model(tmp_path, mode):
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    target = tmp_path / "model"
    rng = random.Random(0)
    refs = None
    for _ in range(8):
        with subprocess.Popen([sys.executable, str(script), str(target), mode],
                              stdout=subprocess.PIPE, text=True) as child:
            try:
                assert child.stdout.readline().strip() == "ready"
                time.sleep(rng.uniform(0.01, 0.25))
            finally:
                child.send_signal(signal.SIGKILL)
        if refs is None:
            refs = [load_model(f"{target}_ref{i}").state_dict() for i in range(2)]
        if not target.exists() and mode == "exchange":
            continue  # killed before the first save finished: nothing was there
        loaded = load_model(target).state_dict()  # loads, and is one complete version
        assert any(_weights_equal(loaded, ref) for ref in refs)
    # The next save cleans what killed saves left beside the folder.
    create_model("vae", input_dim=(1, 8, 8), latent_dim=2).save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model_ref0", "model_ref1",
                                                          "saver.py"]


def test_config_values_of_the_wrong_type_name_the_field(tmp_path):
    create_model("vae", input_dim=(1, 8, 8), latent_dim=2).save(tmp_path)
    path = tmp_path / "config.json"
    good = json.loads(path.read_text())
    cases = [
        (lambda p: p.update(model=["vae"]), "field 'model' must be a model name"),
        (lambda p: p.update(config="latent_dim=2"), "field 'config' must be a mapping"),
        (lambda p: p["config"].update(encoder_kwargs="wide"), "config.encoder_kwargs"),
        (lambda p: p["config"].update(latent_dim="two"), "config.latent_dim"),
        (lambda p: p["config"].update(encoder=["mlp"]), "config.encoder"),
    ]
    for edit, message in cases:
        payload = json.loads(json.dumps(good))
        edit(payload)
        path.write_text(json.dumps(payload))
        with pytest.raises(ValueError, match=message):
            load_model(tmp_path)


def test_weights_with_nan_load_with_a_warning(tmp_path):
    model = create_model("vae", input_dim=(1, 8, 8), latent_dim=2)
    with torch.no_grad():
        model.decoder.net[0].weight[0, 0] = float("nan")
    model.save(tmp_path)
    with pytest.warns(UserWarning, match="NaN or infinite.*decoder.net.0.weight"):
        loaded = load_model(tmp_path)
    assert torch.isnan(loaded.decoder.net[0].weight[0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(create_model("vqvae", input_dim=(1, 8, 8)).save(tmp_path / "vq"))


def test_expected_cli_failures_are_one_line_each(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        Image.fromarray((torch.rand(8, 8) * 255).byte().numpy()).save(images / f"{i:02d}.png")
    bad = images / "05.png"
    bad.write_bytes(bad.read_bytes()[:30])
    np_file = tmp_path / "x.npy"
    np_file.write_bytes(b"not a numpy file")
    wide = tmp_path / "wide.npy"
    import numpy as np

    np.save(wide, np.full((20, 4), 2.0, dtype=np.float32))
    base = ["train", "--epochs", "1", "--no-progress", "--latent-dim", "2"]
    failures = [
        (["--dataset", str(images)], "05.png"),
        (["--dataset", str(np_file)], "x.npy"),
        (["--dataset", str(wide), "--likelihood", "bernoulli"], "values in [2, 2]"),
        (["--dataset", "digits", "--lr", "inf"], "learning_rate"),
        (["--dataset", "digits", "--option", "beta=nan"], "beta"),
    ]
    for index, (args, needle) in enumerate(failures):
        assert main([*base, *args, "--output", str(tmp_path / f"r{index}")]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("vaebench: error:") and err.count("\n") == 1, err
        assert needle in err, err
    with pytest.warns(UserWarning, match="05.png"):
        code = main([*base, "--dataset", str(images), "--skip-bad-images", "--model", "ae",
                     "--output", str(tmp_path / "skipped")])
    assert code == 0
    assert json.loads((tmp_path / "skipped" / "metrics.json").read_text())["n_train"] == 10
