"""Regularized autoencoders (Ghosh, Sajjadi, Vergari, Black and Schoelkopf, "From
Variational to Deterministic Autoencoders", ICLR 2020), and the ex-post Gaussian mixture
prior they generate with (shared with the WAE)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from vaebench.models.ae import AE, AEConfig
from vaebench.models.base import Objective
from vaebench.models.registry import register_model


class GaussianMixturePrior(nn.Module):
    """A K-component Gaussian mixture over codes of ``dim`` features, with full covariances.

    Its parameters are buffers (``weights`` (K,), ``means`` (K, d), ``scale_tril`` (K, d, d)
    the Cholesky factors of the covariances, ``fitted`` a boolean), so they belong to the
    model's ``state_dict`` and are saved in safetensors and loaded with it. Until
    :meth:`fit` runs, ``fitted`` is False and the model that holds it samples from N(0, I).
    """

    def __init__(self, n_components: int, dim: int):
        super().__init__()
        if n_components < 1 or dim < 1:
            raise ValueError(f"a Gaussian mixture needs n_components >= 1 and dim >= 1, got "
                             f"{n_components} and {dim}")
        self.n_components, self.dim = n_components, dim
        self.register_buffer("weights", torch.full((n_components,), 1.0 / n_components))
        self.register_buffer("means", torch.zeros(n_components, dim))
        self.register_buffer("scale_tril", torch.eye(dim).repeat(n_components, 1, 1))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, dim={self.dim}, fitted={bool(self.fitted)}"

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @torch.no_grad()
    def fit(self, codes: torch.Tensor, seed: int = 0, reg_covar: float = 1e-6,
            max_iter: int = 200) -> GaussianMixturePrior:
        """Fit by EM on ``codes`` (N, d) with scikit-learn's ``GaussianMixture`` (full
        covariances, k-means initialization, ``random_state=seed``), in float64, and copy
        its weights, means and Cholesky factors of the covariances into the buffers."""
        from sklearn.mixture import GaussianMixture

        codes = codes.detach().flatten(1)
        if codes.shape[1] != self.dim:
            raise ValueError(f"codes have {codes.shape[1]} features, the mixture {self.dim}")
        if codes.shape[0] < self.n_components:
            raise ValueError(f"cannot fit n_components={self.n_components} Gaussians on "
                             f"{codes.shape[0]} codes; use fewer components or more data")
        if not bool(torch.isfinite(codes).all()):
            raise ValueError("the codes contain NaN or infinite values; cannot fit a prior")
        mixture = GaussianMixture(self.n_components, covariance_type="full",
                                  reg_covar=reg_covar, max_iter=max_iter, random_state=seed)
        mixture.fit(codes.double().cpu().numpy())
        covariances = torch.from_numpy(mixture.covariances_)
        target = {"dtype": self.means.dtype, "device": self.means.device}
        self.weights.copy_(torch.from_numpy(mixture.weights_).to(**target))
        self.means.copy_(torch.from_numpy(mixture.means_).to(**target))
        self.scale_tril.copy_(torch.linalg.cholesky(covariances).to(**target))
        self.fitted.fill_(True)
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws (n, d): a component by its weight, then mean + L eps, eps ~ N(0, I)."""
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, 1, dtype=self.means.dtype, device=self.means.device,
                          generator=generator)
        return self.means[component] + (self.scale_tril[component] @ eps).squeeze(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log sum_k w_k N(z; mu_k, L_k L_k^T) per row of z (B, d): shape (B,)."""
        diff = (z.unsqueeze(1) - self.means).unsqueeze(-1)  # (B, K, d, 1)
        tril = self.scale_tril.expand(z.shape[0], -1, -1, -1)
        white = torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        log_normal = (-0.5 * (white**2).sum(-1) - log_det
                      - 0.5 * self.dim * math.log(2 * math.pi))
        return torch.logsumexp(log_normal + self.weights.log(), dim=1)


class ExPostPrior:
    """Mixin of a deterministic autoencoder that generates from a Gaussian mixture fitted
    on its training codes after training: the ex-post density estimation of Ghosh et al.
    (2020, Sec. 4), which they use with a 10-component mixture.

    The mixture has ``config.prior_components`` components (0: no ex-post prior) and lives
    in the submodule ``ex_post_prior`` (saved with the model). :meth:`fit_prior` (the CLI
    calls it after training) fits it; :meth:`generate` samples from it once fitted, from
    N(0, I) before.
    """

    ex_post_prior: GaussianMixturePrior | None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._build_ex_post_prior(self.config.prior_components)

    def _build_ex_post_prior(self, n_components: int) -> None:
        self.ex_post_prior = (GaussianMixturePrior(n_components, self.config.latent_dim)
                              if n_components > 0 else None)

    @torch.no_grad()
    def fit_prior(self, data: Any, n_components: int | None = None, seed: int = 0,
                  batch_size: int = 1024, **options: Any) -> None:
        """Fit the ex-post Gaussian mixture on the codes ``encode(x).mean`` of ``data`` (an
        ArrayData or anything :func:`vaebench.data.as_data` accepts), in eval mode.

        ``n_components`` defaults to ``config.prior_components``; another value replaces
        the mixture and is written to the config (so the saved model reloads it). With 0
        components nothing is fitted. ``options`` go to :meth:`GaussianMixturePrior.fit`.
        """
        from vaebench.data import as_data
        from vaebench.metrics.representation import latent_codes

        if n_components is None:
            n_components = self.config.prior_components
        if n_components != self.config.prior_components:
            self.config.prior_components = n_components  # validated by the config
            self._build_ex_post_prior(n_components)
            if self.ex_post_prior is not None:
                self.ex_post_prior.to(self.device)
        if self.ex_post_prior is None:
            return
        codes = latent_codes(self, as_data(data, name="prior data"), batch_size)
        self.ex_post_prior.fit(codes.to(self.device), seed=seed, **options)

    @torch.no_grad()
    def generate(self, n: int) -> torch.Tensor:
        """Decode ``n`` draws of the fitted ex-post mixture (of N(0, I) before fitting)."""
        if self.ex_post_prior is None or not self.ex_post_prior.is_fitted:
            return super().generate(n)
        z = self.ex_post_prior.sample(n).view(n, *self.latent_shape)
        return self.likelihood.mean(self.decode(z))


class RAEConfig(AEConfig):
    """Config of a regularized autoencoder: ``beta`` weighs the code penalty 0.5 ||z||^2,
    ``lambda_`` (the paper's lambda) the decoder regularizer, ``prior_components`` the
    ex-post Gaussian mixture (0: generate from N(0, I))."""

    beta: float = Field(5e-3, ge=0.0, description="weight of the code penalty 0.5 ||z||^2")
    lambda_: float = Field(4e-5, ge=0.0, description="weight of the decoder regularizer")
    prior_components: int = Field(10, ge=0, description="components of the ex-post Gaussian "
                                                        "mixture prior (0: none)")


class RAEL2Config(RAEConfig):
    """Config of :class:`RAEL2`."""


class RAEGPConfig(RAEConfig):
    """Config of :class:`RAEGP`: ``gp_projection`` chooses what the gradient penalty
    measures (see :meth:`RAEGP.decoder_penalty`)."""

    lambda_: float = Field(1e-3, ge=0.0, description="weight of the gradient penalty")
    gp_projection: Literal["gaussian", "ones"] = Field(
        "gaussian", description="'gaussian': unbiased estimate of the squared Frobenius norm "
                                "of the decoder Jacobian; 'ones': squared gradient of the "
                                "sum of the decoder outputs")


class RAE(ExPostPrior, AE):
    """Regularized autoencoder (Ghosh et al. 2020, Sec. 3): a deterministic autoencoder
    whose loss, per sample, is

        loss = -log p(x | z) + beta * 0.5 ||z||^2 + lambda * L_REG,      z = E(x),

    the code penalty L_Z = 0.5 ||z||^2 keeping the latent space bounded, and L_REG a
    regularizer of the decoder that replaces the VAE's noise injection (:class:`RAEL2`,
    :class:`RAEGP`). Terms: ``recon``, ``code`` (0.5 ||z||^2) and the subclass's
    ``penalty_name``. It generates from an ex-post Gaussian mixture fitted on its training
    codes (:class:`ExPostPrior`). It has no likelihood (no ELBO).

    The paper's L_REC is ||x - x_hat||^2; our Gaussian term (sigma = 1) is half that plus a
    constant, so beta and lambda here weigh twice as much, relative to the reconstruction,
    as the same numbers in the paper. The authors' MNIST configuration (their code release:
    squared error averaged over the 784 pixels, z^2 averaged over 16 latent dimensions with
    weight 1e-4, decoder L2 weight 1e-7) is, rescaled to our summed Gaussian term,
    beta ~ 5e-3 and lambda ~ 4e-5 for RAE-L2: our defaults.
    """

    config_class: ClassVar[type[RAEConfig]] = RAEConfig
    #: Name of the decoder regularizer's term.
    penalty_name: ClassVar[str]

    def objective(self, x: torch.Tensor) -> Objective:
        objective = super().objective(x)
        objective.terms["code"] = 0.5 * objective.z.pow(2).flatten(1).sum(1)
        objective.terms[self.penalty_name] = self.decoder_penalty(objective)
        return objective

    def decoder_penalty(self, objective: Objective) -> torch.Tensor:
        """L_REG per sample, shape (B,)."""
        raise NotImplementedError

    def term_weights(self) -> dict[str, float]:
        return {**super().term_weights(), "code": self.config.beta,
                self.penalty_name: self.config.lambda_}


@register_model
class RAEL2(RAE):
    """RAE-L2 (Ghosh et al. 2020): L_REG = ||theta||^2, Tikhonov regularization of the
    decoder, theta = every parameter of the decoder network (weights and biases).

    This is a penalty on parameters, not a property of a sample: the term ``decoder_l2``
    gives every sample the same value ||theta||^2, so its batch mean is ||theta||^2 and it
    does not depend on the batch at all.
    """

    name = "rae_l2"
    config_class = RAEL2Config
    penalty_name = "decoder_l2"

    def decoder_penalty(self, objective: Objective) -> torch.Tensor:
        squares = sum(p.pow(2).sum() for p in self.decoder.parameters())
        batch = objective.z.shape[0]
        return torch.as_tensor(squares, dtype=objective.z.dtype,
                               device=objective.z.device).expand(batch)


@register_model
class RAEGP(RAE):
    """RAE-GP (Ghosh et al. 2020): L_REG = ||grad_z D(z)||^2 at z = E(x), per sample.

    The decoder D maps a code to D outputs, so its "gradient" is the Jacobian J (D x d).
    With ``gp_projection="gaussian"`` (default) the term is ||J^T v||^2 for a fresh
    v ~ N(0, I_D) per sample, an unbiased estimate of the squared Frobenius norm ||J||_F^2
    (E[v v^T] = I; Hutchinson's trace estimator applied to J J^T) at the cost of one
    backward pass; with ``"ones"`` it is ||J^T 1||^2 = ||grad_z sum_d D_d(z)||^2, the
    gradient of the summed outputs that autograd gives for the paper's formula taken
    literally (deterministic, but blind to changes of the outputs that cancel in the sum).
    The gradient is taken with ``create_graph=True`` so that the penalty is trained; under
    ``torch.no_grad`` (evaluation) it is computed on a detached copy of the codes and
    returned without a graph. Each sample's term depends only on that sample (for decoders
    without batch statistics).
    """

    name = "rae_gp"
    config_class = RAEGPConfig
    penalty_name = "decoder_gp"

    def decoder_penalty(self, objective: Objective) -> torch.Tensor:
        z, params = objective.z, objective.decoder_params
        training_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not (training_graph and z.requires_grad):
                z = z.detach().requires_grad_(True)
                params = self.decode(z)
            if self.config.gp_projection == "gaussian":
                projection = torch.randn_like(params)
            else:
                projection = torch.ones_like(params)
            (gradient,) = torch.autograd.grad((params * projection).sum(), z,
                                              create_graph=training_graph)
        return gradient.pow(2).flatten(1).sum(1)
