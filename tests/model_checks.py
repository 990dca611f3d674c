"""Checks every model passes, shared by the model tests: training lowers the eval loss with
every loss finite, a saved and loaded copy behaves identically, the CLI trains it."""

import json
import math

import torch

from vaebench import Trainer, TrainerConfig, load_model
from vaebench.cli import main
from vaebench.data import as_data
from vaebench.training import evaluate


def assert_training_lowers_the_loss(model, train, test, epochs=2):
    """Train ``epochs`` epochs: every loss is finite and the last eval loss is below the
    untrained model's. Returns the history."""
    model.prepare(as_data(train))
    torch.manual_seed(1)
    before = evaluate(model, test)["loss"]
    history = Trainer(model, TrainerConfig(epochs=epochs, batch_size=64, progress=False)).fit(
        train, test)
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["eval_loss"])
               for r in history)
    assert history[-1]["eval_loss"] < before
    return history


def assert_round_trip(model, folder, x, **inputs):
    """A copy saved to ``folder`` and loaded has the type and config of ``model`` and, under
    the same seed, the same per-sample terms and samples. Returns the copy."""
    model.save(folder)
    loaded = load_model(folder)
    assert type(loaded) is type(model) and loaded.config == model.config
    model.eval()
    results = []
    for m in (model, loaded):
        torch.manual_seed(3)
        results.append((m(x, **inputs).terms, m.generate(4)))
    (terms, samples), (loaded_terms, loaded_samples) = results
    assert terms.keys() == loaded_terms.keys()
    assert all(torch.equal(terms[key], loaded_terms[key]) for key in terms)
    assert torch.equal(samples, loaded_samples)
    return loaded


def assert_trains_from_the_cli(name, out, *options):
    """``vaebench train`` on digits for one epoch succeeds, writes finite figures and a model
    that loads. Returns its metrics."""
    assert main(["train", "--model", name, "--dataset", "digits", "--epochs", "1",
                 "--likelihood", "bernoulli", "--output", str(out), "--no-progress",
                 *options]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["eval_loss"])
    assert load_model(out / "model").name == name
    return metrics


def assert_likelihood_bounds(model, x, k):
    """The likelihood report on ``x`` is finite and its importance-sampled log p(x) (K =
    ``k``) is at least its ELBO. Returns the report."""
    from vaebench.metrics import likelihood_report

    report = likelihood_report(model, x, k=k)
    assert math.isfinite(report["elbo"]) and math.isfinite(report["log_likelihood"])
    assert report["log_likelihood"] >= report["elbo"]
    return report


def assert_terms_batch_invariant(model, x, rows=8, terms=None):
    """The per-sample ``terms`` (all by default) of the first ``rows`` samples are the same
    in a batch of ``rows`` as in the whole batch ``x``. Returns both term dicts."""
    small, large = model(x[:rows]).terms, model(x).terms
    for key in terms or small:
        torch.testing.assert_close(small[key], large[key][:rows])
    return small, large


def fix_the_noise(monkeypatch):
    """Replace the Gaussian draws by fixed values (posterior draws at the mean, momenta at
    0.5), so that a sample's terms can be compared across batch sizes."""
    from vaebench.distributions import DiagonalGaussian

    monkeypatch.setattr(DiagonalGaussian, "rsample",
                        lambda self, shape=(): self.mean.expand(shape + self.mean.shape))
    monkeypatch.setattr(torch, "randn_like", lambda t: torch.full_like(t, 0.5))
