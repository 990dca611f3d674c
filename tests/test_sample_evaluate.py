"""A model's life after training from the command line: ``vaebench sample`` and ``vaebench
evaluate`` on the folder ``vaebench train`` wrote, and the library functions under them."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vaebench
from vaebench import load_model
from vaebench.cli import main
from vaebench.data import load_train_test
from vaebench.evaluation import evaluating
from vaebench.models import get_model_class, list_models
from vaebench.samplers import create_sampler, load_sampler, saved_samplers
from vaebench.saved_model import evaluate_model, training_record
from vaebench.training import evaluate

TRAIN = ["--dataset", "digits", "--latent-dim", "4", "--epochs", "2", "--no-progress",
         "--likelihood", "bernoulli", "--iwae-k", "5"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "run"
    assert main(["train", "--model", "vae", *TRAIN, "--output", str(out)]) == 0
    return out


def test_train_records_its_data_and_saves_its_sampler(vae_run):
    model_dir = vae_run / "model"
    assert saved_samplers(model_dir) == ["normal"]
    record = training_record(model_dir)
    assert record["dataset"] == "digits" and record["seed"] == 0
    train, _ = load_train_test(**record)
    metrics = json.loads((vae_run / "metrics.json").read_text())
    assert metrics["n_train"] == len(train)
    assert metrics["sampler"]["sampler"] == "normal"


def test_sample_writes_the_seeded_draws_of_the_sampler(vae_run, tmp_path, capsys):
    args = ["sample", "--model", str(vae_run / "model"), "-n", "12", "--seed", "3"]
    assert main([*args, "--output", str(tmp_path / "grid.png"),
                 "--npy", str(tmp_path / "a.npy")]) == 0
    assert main([*args, "--npy", str(tmp_path / "b.npy")]) == 0
    first, second = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert first.shape == (12, 1, 8, 8) and np.array_equal(first, second)
    assert (tmp_path / "grid.png").stat().st_size > 0
    model = load_model(vae_run / "model")
    expected = create_sampler("normal", model).generate(model, 12, seed=3)
    np.testing.assert_allclose(first, expected.numpy(), rtol=1e-6, atol=1e-6)
    assert main([*args[:-1], "4", "--npy", str(tmp_path / "c.npy")]) == 0
    assert not np.array_equal(np.load(tmp_path / "c.npy"), first)
    assert "12 samples of the normal sampler" in capsys.readouterr().out


def test_sample_fits_a_missing_sampler_on_the_training_data_and_saves_it(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "vqvae", *TRAIN, "--encoder", "spatial",
                 "--decoder", "spatial", "--option", "num_codes=16",
                 "--sampler-option", "epochs=1", "--sampler-option", "channels=8",
                 "--output", str(out)]) == 0
    model_dir = out / "model"
    saved = load_sampler(model_dir, "pixelcnn", load_model(model_dir))
    weights = {k: v.clone() for k, v in saved.state_dict().items()}
    args = ["sample", "--model", str(model_dir), "-n", "4", "--npy", str(tmp_path / "s.npy")]
    assert main(args) == 0  # the saved sampler: nothing is fitted again
    reloaded = load_sampler(model_dir, "pixelcnn", load_model(model_dir))
    assert all(torch.equal(weights[k], v) for k, v in reloaded.state_dict().items())
    assert main([*args, "--refit", "--option", "epochs=1", "--option", "channels=4"]) == 0
    refitted = load_sampler(model_dir, "pixelcnn", load_model(model_dir))
    assert refitted.config.channels == 4
    assert np.load(tmp_path / "s.npy").shape == (4, 1, 8, 8)


def test_sample_and_evaluate_fail_in_one_line(vae_run, tmp_path, capsys):
    model_dir = str(vae_run / "model")
    cases = [
        (["sample", "--model", model_dir], "--output grid.png and/or --npy"),
        (["sample", "--model", model_dir, "--sampler", "pixelcnn", "--npy", "x.npy"],
         "the pixelcnn sampler does not serve the vae model"),
        (["sample", "--model", model_dir, "--sampler", "nope", "--npy", "x.npy"],
         "unknown sampler 'nope'"),
        (["sample", "--model", str(tmp_path), "--npy", "x.npy"], "no config.json"),
        (["evaluate", "--model", model_dir, "--samplers", "nope", "--no-sample-quality"],
         "unknown sampler 'nope'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("vaebench: error:") and message in err and len(
            err.strip().splitlines()) == 1, err


def test_a_sampler_that_needs_data_names_the_missing_dataset(tmp_path, capsys):
    model = vaebench.create_model("vqvae", input_dim=(1, 8, 8), latent_dim=4, num_codes=8,
                                  encoder="mlp", decoder="mlp")
    model.save(tmp_path / "m")  # saved from Python: no record of its training data
    assert main(["sample", "--model", str(tmp_path / "m"), "--npy", "x.npy"]) == 2
    assert "give the dataset (--dataset)" in capsys.readouterr().err
    assert main(["sample", "--model", str(tmp_path / "m"), "--dataset", "digits",
                 "--option", "epochs=1", "--npy", str(tmp_path / "x.npy")]) == 0
    assert saved_samplers(tmp_path / "m") == ["pixelcnn"]


def test_evaluate_writes_the_figures_of_the_saved_model(vae_run, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(vae_run / "model"), "--k", "7",
                 "--no-sample-quality", "--no-progress", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    model = load_model(vae_run / "model")
    _, test = load_train_test(**training_record(vae_run / "model"))
    assert report["n_test"] == len(test)
    with evaluating(None, seed=0):
        expected = evaluate(model, test)["loss"]
    assert report["loss"]["loss"] == pytest.approx(expected, rel=1e-6)
    assert report["likelihood"]["k"] == 7
    assert report["likelihood"]["log_likelihood"] >= report["likelihood"]["elbo"] - 0.5
    assert "sample_quality" not in report


class _PixelFeatures:
    """Flattened pixels as features: enough to compare two samplers' FID."""

    name, dim = "pixels", 64

    def __call__(self, images):
        return vaebench.data.as_data(images).take(slice(None)).flatten(1)


def test_evaluate_scores_each_sampler(vae_run):
    model = load_model(vae_run / "model")
    _, test = load_train_test(**training_record(vae_run / "model"))
    samplers = {"normal": create_sampler("normal", model)}
    report = evaluate_model(model, test, samplers, k=2, features=_PixelFeatures(),
                            n_samples=40)
    quality = report["sample_quality"]["normal"]
    assert quality["n"] == 40 and quality["features"] == "pixels" and quality["fid"] > 0
    again = evaluate_model(model, test, samplers, k=2, features=_PixelFeatures(),
                           n_samples=40)
    assert again["sample_quality"]["normal"]["fid"] == quality["fid"]  # seeded draws


def test_keep_last_or_best_is_reported(tmp_path):
    for keep in ("best", "last"):
        out = tmp_path / keep
        assert main(["train", "--model", "vae", *TRAIN, "--epochs", "3", "--keep", keep,
                     "--checkpoint-every", "1", "--output", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        history = json.loads((out / "history.json").read_text())
        kept = metrics["kept"]
        if keep == "last":
            assert kept["epoch"] == 3 and "last" in kept["why"]
        else:
            best = min(history, key=lambda record: record["eval_loss"])
            assert kept["epoch"] == best["epoch"] == metrics["best_epoch"]
        assert kept["eval_loss"] == history[kept["epoch"] - 1]["eval_loss"]
        # the saved weights are the kept epoch's
        saved = load_file(out / "model" / "model.safetensors")
        at_epoch = load_file(out / "checkpoints" / f"epoch_{kept['epoch']:04d}" /
                             "model.safetensors")
        assert all(torch.equal(saved[k], at_epoch[k]) for k in at_epoch)


def test_version_and_listings(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"vaebench {vaebench.__version__}"
    assert main(["list-samplers"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == vaebench.samplers.list_samplers()
    assert main(["list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_models()
    for line in lines:
        name, description = line.split(maxsplit=1)
        doc = " ".join(get_model_class(name).__doc__.split())
        # a whole sentence of the docstring, never cut mid-sentence
        assert doc.startswith(description) and description.endswith("."), line
        assert not re.search(r"[,:;]$|\b(as|of|and|the)$", description[:-1]), line
