"""The second stage of Dai and Wipf, "Diagnosing and Enhancing VAE Models" (ICLR 2019,
Sec. 4): a second VAE fitted on the codes z of the first, whose decoder variance gamma is
learned (that is what lets it match the codes' distribution, Sec. 3-4); drawing is
u ~ N(0, I), then z ~ p(z | u).
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt
from torch import nn

from vaebench.models.registry import create_model
from vaebench.samplers.base import SamplerConfig
from vaebench.samplers.gmm import EuclideanSampler, held_out_split
from vaebench.samplers.registry import register_sampler
from vaebench.training import Trainer, TrainerConfig, evaluate

__all__ = ["TwoStageConfig", "TwoStageSampler"]


class TwoStageConfig(SamplerConfig):
    """The second VAE and its training budget. The paper's has 3 hidden layers of 1024
    units; ours keep its depth with 256 units, a sixteenth of the multiply-adds of an inner
    layer, so that fitting on a CPU stays quick for inputs of a few dozen features."""

    latent_dim: int | None = Field(None, gt=0, description="latent dimension of the second "
                                                           "VAE (None: the codes' d, as "
                                                           "in the paper)")
    hidden: tuple[PositiveInt, ...] = Field((256, 256, 256),
                                            description="hidden widths of the encoder (the "
                                                        "decoder's, reversed)")
    epochs: int = Field(100, gt=0, description="epochs of training")
    batch_size: int = Field(128, gt=0, description="codes per step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")


@register_sampler
class TwoStageSampler(EuclideanSampler):
    """A second-stage VAE over the codes (Dai and Wipf 2019, Sec. 4), the submodule
    ``second_stage``: Gaussian p(z | u) with a learned scalar scale gamma, trained by the
    library's :class:`~vaebench.training.Trainer`."""

    name = "two_stage"
    config_class = TwoStageConfig

    def build(self, model: nn.Module) -> None:
        cfg = self.config
        self.second_stage = create_model(
            "vae", input_dim=(self.dim,), latent_dim=cfg.latent_dim or self.dim,
            likelihood="gaussian", sigma="learned", encoder_kwargs={"hidden": list(cfg.hidden)},
            decoder_kwargs={"hidden": list(cfg.hidden[::-1])})

    def fit_codes(self, codes: torch.Tensor, seed: int, progress: bool) -> dict[str, float]:
        """Train the second VAE (built with seeded weights) on 90 % of the codes, keeping
        the epoch with the best negative ELBO on the other 10 %; returns the negative ELBOs
        (nats per code) of the kept weights."""
        cfg = self.config
        train, held_out = held_out_split(codes)
        trainer = Trainer(self.second_stage, TrainerConfig(
            epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.lr, seed=seed,
            device=str(codes.device), progress=progress))
        trainer.fit(train, held_out)
        return {"train_neg_elbo": evaluate(self.second_stage, train)["loss"],
                "held_out_neg_elbo": trainer.best_eval_loss}

    def draw(self, model: nn.Module, n: int) -> torch.Tensor:
        """u ~ N(0, I), then z ~ N(mean(u), gamma^2 I), as the authors' code draws: gamma is
        small on codes of a low-dimensional manifold, but it holds the variance of the
        directions that the second stage leaves to it (e.g. when the codes fill R^d)."""
        stage = self.second_stage
        return stage.likelihood.sample(stage.decode(stage.prior.sample(n, device=stage.device)))
