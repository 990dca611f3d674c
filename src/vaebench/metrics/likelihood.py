"""Honest likelihood figures: the ELBO and an importance-sampled estimate of log p(x).

Both are per sample, in nats, with every normalizing constant of p(x | z), p(z) and
q(z | x) included; :func:`likelihood_report` adds bits per dimension. They need a model
that can give importance weights, ``model.log_importance_weights(x, k) -> (k, B)`` with
log w = log p(x | z) + log p(z) - log q(z | x) for z ~ q(z | x) (the VAE and its variants).
A deterministic autoencoder has no q(z | x) and no prior over which to integrate, so its
likelihood is undefined and these functions raise a TypeError.

The computation is vectorized over the samples of a batch and the importance draws: each
call decodes ``batch_size * chunk_size`` codes at once, and the draws of a sample are
processed in chunks of ``chunk_size`` whose log-sum-exp is accumulated, so memory stays
bounded for any k. Models run in eval mode under ``torch.no_grad`` (their previous mode is
restored), so a likelihood with a training-time-only form (``sigma="optimal"``) is
evaluated as the proper density it uses in eval mode. A model conditioned on labels
(``model.needs_labels``, e.g. the CVAE) gets each batch's labels from the data, and the
figures are then those of log p(x | labels).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm.auto import tqdm

from vaebench.data import as_data
from vaebench.evaluation import evaluating

__all__ = ["elbo", "has_likelihood", "likelihood_report", "log_likelihood"]


def has_likelihood(model: Any) -> bool:
    """Whether ``model`` defines a likelihood (an ELBO and importance weights)."""
    return bool(getattr(model, "has_likelihood", True)) and callable(
        getattr(model, "log_importance_weights", None))


def _require_likelihood(model: Any) -> None:
    if has_likelihood(model):
        return
    reason = getattr(model, "no_likelihood_reason", "it has no log_importance_weights(x, k)")
    raise TypeError(
        f"the likelihood of {type(model).__name__} is undefined: {reason}, so it has no ELBO "
        "and no log p(x); compare it by reconstruction error "
        "(vaebench.metrics.reconstruction_mse) or sample quality instead")


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


#: Codes decoded per call by default: moderate on a CPU, where large temporaries cost more
#: in fresh memory than they save in overhead; large on a GPU.
CODES_PER_CALL = {"cpu": 2048, "other": 32768}


def _sizes(k: int, batch_size: int | None, chunk_size: int | None,
           device: torch.device) -> tuple[int, int]:
    """(batch_size, chunk_size): by default all k draws of a batch in one decoder call, the
    batch sized so a call decodes about CODES_PER_CALL codes."""
    if k < 1:
        raise ValueError(f"k (the number of importance draws) must be at least 1, got {k}")
    budget = CODES_PER_CALL["cpu" if device.type == "cpu" else "other"]
    if batch_size is None:
        batch_size = max(1, min(budget // k, 4096))
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if chunk_size is None:
        chunk_size = max(1, budget // batch_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    return batch_size, min(chunk_size, k)


def _estimates(model: Any, data: Any, k: int, batch_size: int | None, chunk_size: int | None,
               seed: int | None, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean of the k log weights (an ELBO estimate) and logsumexp - log k (the
    IWAE estimate of log p(x)), both (N,) float64 on the CPU, from the same k draws."""
    _require_likelihood(model)
    device = _device(model)
    batch_size, chunk = _sizes(k, batch_size, chunk_size, device)
    data = as_data(data, name="data")
    needs_labels = bool(getattr(model, "needs_labels", False))
    if needs_labels and data.labels is None:
        raise ValueError(f"{type(model).__name__} is conditioned on labels: give the data with "
                         "its labels, e.g. (x, labels), to estimate log p(x | labels)")
    mean_parts, lse_parts = [], []
    bar = tqdm(total=len(data), disable=not progress, desc=f"log p(x), K = {k}",
               unit="sample", dynamic_ncols=True, mininterval=0.5)
    with bar, evaluating(model, seed):
        dtype = torch.float32 if device.type == "mps" else torch.float64  # mps has no float64
        for first in range(0, len(data), batch_size):
            rows = slice(first, first + batch_size)
            x = data.take(rows).to(device)
            inputs = {"labels": data.labels[rows].to(device)} if needs_labels else {}
            total = torch.zeros(x.shape[0], dtype=dtype, device=device)
            running = torch.full_like(total, -math.inf)
            for start in range(0, k, chunk):
                log_w = model.log_importance_weights(x, min(chunk, k - start), **inputs)
                log_w = log_w.to(dtype)
                total += log_w.sum(0)
                running = torch.logaddexp(running, torch.logsumexp(log_w, 0))
            mean_parts.append((total / k).cpu().double())
            lse_parts.append((running - math.log(k)).cpu().double())
            bar.update(x.shape[0])
    return torch.cat(mean_parts), torch.cat(lse_parts)


def elbo(model: Any, data: Any, n_samples: int = 1, batch_size: int | None = None,
         chunk_size: int | None = None, seed: int | None = None) -> torch.Tensor:
    """Per-sample ELBO in nats, E_q[log p(x | z) + log p(z) - log q(z | x)], shape (N,).

    Estimated with ``n_samples`` draws of z per sample (their mean log weight). ``data`` is
    anything :func:`vaebench.data.as_data` accepts; ``seed`` makes the draws reproducible
    without touching the global random state. Returns float64 on the CPU.
    """
    return _estimates(model, data, n_samples, batch_size, chunk_size, seed)[0]


def log_likelihood(model: Any, data: Any, k: int = 100, batch_size: int | None = None,
                   chunk_size: int | None = None, seed: int | None = None) -> torch.Tensor:
    """Per-sample importance-sampled estimate of log p(x) in nats, shape (N,).

    log p(x) ~ log (1/k) sum_i w_i, w_i = p(x, z_i) / q(z_i | x), z_i ~ q(z | x): the IWAE
    bound L_k of Burda et al. (2016), a lower bound in expectation that does not decrease
    with k and tends to log p(x); L_1 is the ELBO. ``batch_size`` samples and ``chunk_size``
    of their draws are decoded in one call, and the chunks' log-sum-exps are accumulated, so
    memory is bounded for any k. By default a batch's k draws go in one call and the batch
    is sized to about 2,048 codes per call on a CPU (where large temporaries cost more in
    fresh memory than they save) and 32,768 on a GPU. Returns float64 on the CPU.
    """
    return _estimates(model, data, k, batch_size, chunk_size, seed)[1]


def likelihood_report(model: Any, data: Any, k: int = 100, batch_size: int | None = None,
                      chunk_size: int | None = None, seed: int | None = 0,
                      progress: bool = False) -> dict[str, Any]:
    """Mean ELBO and mean log p(x) estimate over ``data``, in nats and bits per dimension.

    One pass of k draws per sample gives both: the ELBO is their mean log weight (a k-draw
    Monte Carlo estimate), the log-likelihood estimate their log-mean-exp. Keys:

    ``elbo``, ``log_likelihood``: means in nats per sample (higher is better);
    ``elbo_std_error``, ``log_likelihood_std_error``: standard errors of those means over
    the samples; ``neg_elbo_bits_per_dim``, ``nll_bits_per_dim``: -ELBO and -log p(x) in
    bits per dimension (lower is better); ``k``, ``n_samples``, ``dim`` (D) and
    ``likelihood`` (its name). ``seed`` (default 0) fixes the draws; ``progress`` shows a
    progress bar.
    """
    bound, estimate = _estimates(model, data, k, batch_size, chunk_size, seed, progress)
    n = len(bound)
    likelihood = getattr(model, "likelihood", None)
    dim = getattr(likelihood, "dim", None) or math.prod(as_data(data).sample_shape)

    def std_error(values: torch.Tensor) -> float:
        return float(values.std() / math.sqrt(n)) if n > 1 else math.nan

    to_bits = dim * math.log(2)
    return {
        "elbo": float(bound.mean()),
        "elbo_std_error": std_error(bound),
        "log_likelihood": float(estimate.mean()),
        "log_likelihood_std_error": std_error(estimate),
        "neg_elbo_bits_per_dim": float(-bound.mean() / to_bits),
        "nll_bits_per_dim": float(-estimate.mean() / to_bits),
        "k": k,
        "n_samples": n,
        "dim": dim,
        "likelihood": getattr(getattr(model, "config", None), "likelihood", None),
    }
