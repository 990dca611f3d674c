"""Independent computations the tests compare the library against (torch.distributions)."""

import torch
from torch.distributions import Independent, Normal


def reference_posterior(model, x):
    """q(z | x) of a Gaussian-posterior model, built with torch.distributions."""
    mean, log_var = model.encoder(x).chunk(2, dim=1)
    return Independent(Normal(mean, torch.exp(0.5 * log_var)), 1)


def bernoulli_nll(logits, x):
    """-log p(x | logits) of a Bernoulli decoder, summed over each sample's dimensions."""
    return torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x, reduction="none").flatten(1).sum(1)
