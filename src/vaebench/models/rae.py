"""Regularized autoencoders (Ghosh, Sajjadi, Vergari, Black and Schoelkopf, "From
Variational to Deterministic Autoencoders", ICLR 2020). They generate from the ex-post
Gaussian mixture of the ``gmm`` sampler (:mod:`vaebench.samplers.gmm`)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from vaebench.models.ae import AE, AEConfig
from vaebench.models.base import Objective
from vaebench.models.registry import register_model


class RAEConfig(AEConfig):
    """Config of a regularized autoencoder: ``beta`` weighs the code penalty 0.5 ||z||^2,
    ``lambda_`` (the paper's lambda) the decoder regularizer."""

    beta: float = Field(5e-3, ge=0.0, description="weight of the code penalty 0.5 ||z||^2")
    lambda_: float = Field(4e-5, ge=0.0, description="weight of the decoder regularizer")


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


class RAE(AE):
    """Regularized autoencoder (Ghosh et al. 2020, Sec. 3): a deterministic autoencoder
    whose loss, per sample, is

        loss = -log p(x | z) + beta * 0.5 ||z||^2 + lambda * L_REG,      z = E(x),

    the code penalty L_Z = 0.5 ||z||^2 keeping the latent space bounded, and L_REG a
    regularizer of the decoder that replaces the VAE's noise injection (:class:`RAEL2`,
    :class:`RAEGP`). Terms: ``recon``, ``code`` (0.5 ||z||^2) and the subclass's
    ``penalty_name``. It generates from an ex-post Gaussian mixture fitted on its training
    codes (Sec. 4: the ``gmm`` sampler, its ``default_sampler``). It has no likelihood (no
    ELBO).

    The paper's L_REC is ||x - x_hat||^2; our Gaussian term (sigma = 1) is half that plus a
    constant, so beta and lambda here weigh twice as much, relative to the reconstruction,
    as the same numbers in the paper. The authors' MNIST configuration (their code release:
    squared error averaged over the 784 pixels, z^2 averaged over 16 latent dimensions with
    weight 1e-4, decoder L2 weight 1e-7) is, rescaled to our summed Gaussian term,
    beta ~ 5e-3 and lambda ~ 4e-5 for RAE-L2: our defaults.
    """

    config_class: ClassVar[type[RAEConfig]] = RAEConfig
    default_sampler = "gmm"
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
