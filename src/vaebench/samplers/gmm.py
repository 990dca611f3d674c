"""The ex-post Gaussian mixture of Ghosh, Sajjadi, Vergari, Black and Schoelkopf, "From
Variational to Deterministic Autoencoders" (ICLR 2020, Sec. 4): a mixture of full-covariance
Gaussians fitted by EM on the training codes, 10 components as in the paper.

Also the base shared by the samplers of flat Euclidean codes (``gmm``, ``two_stage``,
``maf``, ``iaf``): :func:`euclidean_refusal` and :func:`held_out_split`.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from vaebench.distributions import BallPrior, HypersphericalUniform
from vaebench.likelihoods import LOG_2PI
from vaebench.samplers.base import Sampler, SamplerConfig
from vaebench.samplers.registry import register_sampler

__all__ = ["EuclideanSampler", "GaussianMixtureConfig", "GaussianMixtureSampler",
           "euclidean_refusal", "held_out_split"]

#: Priors of models whose codes lie on a curved manifold, and where that is.
CURVED_PRIORS = {HypersphericalUniform: "on the unit hypersphere",
                 BallPrior: "in the Poincaré ball"}
#: Share of the training codes that the fitted samplers hold out to choose their best epoch.
HELD_OUT_SHARE = 0.1


def euclidean_refusal(model: nn.Module) -> str | None:
    """Why the codes of ``model`` are not flat vectors of R^d (quantized, on the sphere, in
    the Poincaré ball, or not a vector), or None if they are."""
    advice = f"; use the {model.default_sampler} sampler"
    if hasattr(model, "code_indices"):
        return "its codes are quantized (discrete), not points of R^d" + advice
    for prior, where in CURVED_PRIORS.items():
        if isinstance(model.prior, prior):
            return f"its codes lie {where}, not in Euclidean space" + advice
    if len(model.latent_shape) != 1:
        return f"its codes have shape {tuple(model.latent_shape)}, not flat vectors"
    return None


def held_out_split(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, held_out)``: a random :data:`HELD_OUT_SHARE` of ``codes`` (at least one)
    held out, drawn from the global random stream."""
    order = torch.randperm(len(codes)).to(codes.device)
    held = max(1, round(HELD_OUT_SHARE * len(codes)))
    return codes[order[held:]], codes[order[:held]]


class EuclideanSampler(Sampler):
    """A sampler fitted on flat codes of R^d (refuses other models, see
    :func:`euclidean_refusal`)."""

    needs_fitting = True

    @classmethod
    def refusal(cls, model: nn.Module) -> str | None:
        return euclidean_refusal(model)

    @property
    def dim(self) -> int:
        """d, the number of features of a code."""
        return self.latent_shape[0]


class GaussianMixtureConfig(SamplerConfig):
    """Options of the ``gmm`` sampler (scikit-learn's ``GaussianMixture``)."""

    n_components: int = Field(10, gt=0, description="mixture components (the paper's 10)")
    max_iter: int = Field(200, gt=0, description="EM iterations at most")
    reg_covar: float = Field(1e-6, ge=0, description="added to the covariances' diagonals")


@register_sampler
class GaussianMixtureSampler(EuclideanSampler):
    """K Gaussians with full covariances over the codes (Ghosh et al. 2020, Sec. 4).

    Buffers: ``weights`` (K,), ``means`` (K, d) and ``scale_tril`` (K, d, d), the Cholesky
    factors of the covariances.
    """

    name = "gmm"
    config_class = GaussianMixtureConfig

    def build(self, model: nn.Module) -> None:
        k, d = self.config.n_components, self.dim
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("means", torch.zeros(k, d))
        self.register_buffer("scale_tril", torch.eye(d).repeat(k, 1, 1))

    def fit_codes(self, codes: torch.Tensor, seed: int, progress: bool) -> dict[str, float]:
        """EM with scikit-learn (k-means initialization, ``random_state=seed``) in float64;
        returns the mean NLL of the training codes (nats per code)."""
        from sklearn.mixture import GaussianMixture

        cfg = self.config
        if len(codes) < cfg.n_components:
            raise ValueError(f"the gmm sampler cannot fit n_components={cfg.n_components} "
                             f"Gaussians on {len(codes)} codes; use fewer components or "
                             "more data")
        mixture = GaussianMixture(cfg.n_components, covariance_type="full",
                                  reg_covar=cfg.reg_covar, max_iter=cfg.max_iter,
                                  random_state=seed, verbose=int(progress))
        mixture.fit(codes.double().cpu().numpy())
        self.weights.copy_(torch.from_numpy(mixture.weights_))
        self.means.copy_(torch.from_numpy(mixture.means_))
        self.scale_tril.copy_(torch.linalg.cholesky(torch.from_numpy(mixture.covariances_)))
        return {"train_nll": -float(self.log_prob(codes).mean())}

    def draw(self, model: nn.Module, n: int) -> torch.Tensor:
        """A component k by its weight, then mean_k + L_k eps, eps ~ N(0, I)."""
        component = torch.multinomial(self.weights, n, replacement=True)
        eps = torch.randn(n, self.dim, 1, device=self.means.device)
        return self.means[component] + (self.scale_tril[component] @ eps).squeeze(-1)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log sum_k w_k N(z; mu_k, L_k L_k^T) per code z of ``codes`` (B, d): shape (B,)."""
        diff = (codes.unsqueeze(1) - self.means).unsqueeze(-1)  # (B, K, d, 1)
        tril = self.scale_tril.expand(len(codes), -1, -1, -1)
        white = torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        log_normal = -0.5 * (white**2).sum(-1) - log_det - 0.5 * self.dim * LOG_2PI
        return torch.logsumexp(log_normal + self.weights.log(), dim=1)
