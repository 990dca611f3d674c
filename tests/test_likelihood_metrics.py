"""Tests of vaebench.metrics' likelihood figures: the ELBO and the importance-sampled
log p(x) (IWAE bound), their chunking, their statistics on a trained VAE, and the AE error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import distributions as dist
from torch import nn

from vaebench import AE, VAE, Trainer, TrainerConfig
from vaebench.data import as_data, load_dataset
from vaebench.metrics import elbo, has_likelihood, likelihood_report, log_likelihood

SMALL = {"encoder_kwargs": {"hidden": [128]}, "decoder_kwargs": {"hidden": [128]}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")[0], load_dataset("digits", "test")[0]


@pytest.fixture(scope="module")
def trained(digits):
    """A small VAE trained for a couple of seconds on the 8 x 8 digits (one thread: the
    machine is shared, and more threads only add contention for such small layers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = VAE(input_dim=(1, 8, 8), latent_dim=4, sigma=0.1, **SMALL)
        Trainer(model, TrainerConfig(epochs=15, batch_size=64, learning_rate=2e-3,
                                     progress=False, device="cpu", seed=0)).fit(digits[0])
    finally:
        torch.set_num_threads(threads)
    return model


def _std_error(values: torch.Tensor) -> float:
    return float(values.std() / math.sqrt(len(values)))


# --- statistics on a trained model ------------------------------------------------------

def test_estimate_does_not_decrease_as_k_grows(trained, digits):
    test = digits[1]
    estimates = {k: log_likelihood(trained, test, k=k, seed=k) for k in (1, 10, 100)}
    for small, large in [(1, 10), (10, 100)]:
        gap = estimates[large] - estimates[small]  # paired over the same test samples
        assert gap.mean() > 3 * _std_error(gap), (small, large, gap.mean())


def test_k1_estimate_equals_the_elbo_in_expectation(trained, digits):
    """L_1 against the model's own objective (closed-form KL), on 4 copies of the test set."""
    test = digits[1].repeat(4, 1, 1, 1)
    trained.eval()
    with torch.no_grad():
        terms = trained.objective(test).terms
    analytic = -(terms["recon"] + terms["kl"]).double()
    for estimate in (log_likelihood(trained, test, k=1, seed=3),
                     elbo(trained, test, n_samples=1, seed=4),
                     elbo(trained, test, n_samples=20, seed=5)):
        diff = estimate - analytic
        assert abs(float(diff.mean())) < 4 * _std_error(diff)
    # the ELBO is a lower bound: it sits below the K = 100 estimate
    report = likelihood_report(trained, digits[1], k=100)
    assert report["elbo"] < report["log_likelihood"]


def test_log_importance_weights_formula(trained, digits):
    x = digits[1][:7]
    trained.eval()
    with torch.no_grad():
        torch.manual_seed(11)
        log_w = trained.log_importance_weights(x, 5)
        torch.manual_seed(11)
        q = trained.encode(x)
        z = q.rsample((5,))
        mean = trained.decode(z.flatten(0, 1)).view(5, 7, 1, 8, 8)
    assert log_w.shape == (5, 7)
    log_px = dist.Normal(mean, 0.1).log_prob(x).flatten(2).sum(-1)
    log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = dist.Normal(q.mean, q.std).log_prob(z).sum(-1)
    torch.testing.assert_close(log_w, log_px + log_pz - log_qz, rtol=1e-5, atol=1e-3)


def test_report(trained, digits):
    test = digits[1]
    report = likelihood_report(trained, test.numpy(), k=50, batch_size=100, chunk_size=7)
    assert report["k"] == 50 and report["n_samples"] == len(test) and report["dim"] == 64
    assert report["likelihood"] == "gaussian"
    bits = 64 * math.log(2)
    assert report["nll_bits_per_dim"] == pytest.approx(-report["log_likelihood"] / bits)
    assert report["neg_elbo_bits_per_dim"] == pytest.approx(-report["elbo"] / bits)
    assert 0 < report["log_likelihood_std_error"] < 10
    # the same seed gives the same figures, whatever the batching
    again = likelihood_report(trained, test, k=50, batch_size=100, chunk_size=7)
    assert again["log_likelihood"] == report["log_likelihood"]


# --- mechanics: chunking, modes, random state -------------------------------------------

class TableModel(nn.Module):
    """A stand-in whose log weights come from a fixed table: row = sample id (x[:, 0]),
    columns = the draws, handed out in order across calls for the same batch."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.weight = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[int, int, bool, bool]] = []
        self._batch: tuple | None = None
        self._pos = 0

    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        ids = x[:, 0].long()
        if self._batch != tuple(ids.tolist()):
            self._batch, self._pos = tuple(ids.tolist()), 0
        self.calls.append((k, len(ids), self.training, torch.is_grad_enabled()))
        out = self.table[ids, self._pos:self._pos + k].T
        self._pos += k
        return out


@pytest.mark.parametrize("batch_size,chunk_size", [(1, 1), (7, 3), (64, 100), (5, None)])
def test_chunked_logsumexp_is_exact(batch_size, chunk_size):
    gen = torch.Generator().manual_seed(0)
    n, k = 23, 40
    table = 30 * torch.randn(n, k, generator=gen, dtype=torch.float64) - 500
    model = TableModel(table)
    x = torch.cat([torch.arange(n).view(n, 1).float(), torch.rand(n, 3)], 1)
    got = log_likelihood(model, x, k=k, batch_size=batch_size, chunk_size=chunk_size)
    torch.testing.assert_close(got, torch.logsumexp(table, 1) - math.log(k))
    assert max(c[0] for c in model.calls) <= (chunk_size or k)
    assert max(c[1] for c in model.calls) <= batch_size
    assert not any(training or grad for _, _, training, grad in model.calls)
    model = TableModel(table)
    got_elbo = elbo(model, x, n_samples=k, batch_size=batch_size, chunk_size=chunk_size)
    torch.testing.assert_close(got_elbo, table.mean(1))


class LabelModel(nn.Module):
    """A conditional stand-in: its log weights are the labels it is given."""

    needs_labels = True

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def log_importance_weights(self, x: torch.Tensor, k: int, labels: torch.Tensor):
        assert labels.shape == (x.shape[0],)
        return labels.double().expand(k, -1)


def test_conditional_models_get_their_labels():
    x, labels = torch.rand(30, 4), torch.arange(30) % 7
    got = log_likelihood(LabelModel(), (x, labels), k=6, batch_size=8, chunk_size=4)
    torch.testing.assert_close(got, labels.double())
    with pytest.raises(ValueError, match="labels"):
        log_likelihood(LabelModel(), x, k=6)


def test_mode_and_random_state_restored(trained, digits):
    x = digits[1][:50]
    trained.train()
    state = torch.get_rng_state()
    first = log_likelihood(trained, x, k=5, seed=123)
    assert trained.training
    assert torch.equal(torch.get_rng_state(), state)  # a seeded call leaves it alone
    torch.testing.assert_close(log_likelihood(trained, x, k=5, seed=123), first)
    trained.eval()
    log_likelihood(trained, x, k=5)
    assert not trained.training


def test_optimal_sigma_is_evaluated_as_a_proper_density(digits):
    """With sigma='optimal' the metrics use the fixed running sigma of eval mode: the same
    figures as a fixed-sigma Gaussian of that value, and the running estimate is untouched."""
    torch.manual_seed(0)
    optimal = VAE(input_dim=(1, 8, 8), latent_dim=4, sigma="optimal", **SMALL)
    optimal.likelihood.running_mse.fill_(0.04)
    fixed = VAE(input_dim=(1, 8, 8), latent_dim=4, sigma=0.2, **SMALL)
    state = {k: v for k, v in optimal.state_dict().items() if not k.startswith("likelihood.")}
    fixed.load_state_dict(state)
    x = digits[1][:40]
    got = log_likelihood(optimal, x, k=10, seed=0)
    torch.testing.assert_close(got, log_likelihood(fixed, x, k=10, seed=0), rtol=1e-5, atol=0)
    assert optimal.likelihood.running_mse.item() == pytest.approx(0.04)
    assert optimal.likelihood.num_updates.item() == 0


def test_every_likelihood_gives_finite_figures(digits):
    x = digits[1][:32]
    for name, sigma in [("gaussian", "learned"), ("gaussian", "optimal"), ("gaussian", "data"),
                        ("laplace", 0.2), ("bernoulli", 1.0), ("continuous_bernoulli", 1.0),
                        ("discretized_logistic", 1.0)]:
        torch.manual_seed(0)
        model = VAE(input_dim=(1, 8, 8), latent_dim=3, likelihood=name, sigma=sigma, **SMALL)
        model.prepare(as_data(digits[0]))
        report = likelihood_report(model, x, k=8)
        assert math.isfinite(report["log_likelihood"]) and math.isfinite(report["elbo"])
        assert report["elbo"] <= report["log_likelihood"] + 1e-6


# --- deterministic models ----------------------------------------------------------------

def test_autoencoder_likelihood_is_undefined(digits):
    model = AE(input_dim=(1, 8, 8), latent_dim=4, **SMALL)
    assert not has_likelihood(model)
    assert has_likelihood(VAE(input_dim=(1, 8, 8), latent_dim=4, **SMALL))
    for call in (lambda: log_likelihood(model, digits[1], k=10),
                 lambda: elbo(model, digits[1]),
                 lambda: likelihood_report(model, digits[1])):
        with pytest.raises(TypeError, match="undefined: a deterministic autoencoder"):
            call()


def test_bad_arguments(trained):
    x = np.zeros((4, 1, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="k"):
        log_likelihood(trained, x, k=0)
    with pytest.raises(ValueError, match="chunk_size"):
        log_likelihood(trained, x, k=3, chunk_size=0)
