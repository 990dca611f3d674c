"""Typed, validated, JSON-serializable configs shared by models and the trainer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Config(BaseModel):
    """Base of every config: unknown fields are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ModelConfig(Config):
    """What every autoencoder needs: data shape, latent size, networks and likelihood.

    ``encoder`` / ``decoder`` name a built-in network (``"mlp"``, ``"conv"``) or give the
    import path of a user class (``"package.module:Class"``), built as
    ``Class(**encoder_kwargs)``.
    """

    input_dim: tuple[int, ...] = Field(description="shape of one sample, e.g. (1, 28, 28)")
    latent_dim: int = Field(16, gt=0)
    encoder: str = "mlp"
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict)
    decoder: str = "mlp"
    decoder_kwargs: dict[str, Any] = Field(default_factory=dict)
    likelihood: str = Field("gaussian", description="reconstruction distribution p(x|z)")
    sigma: float | str = Field(
        1.0, description="Gaussian scale: a positive number, or 'learned' / 'optimal' / 'data'"
    )
    sigma_per: str = Field("scalar", description="learned sigma: 'scalar', 'channel' or 'pixel'")

    @field_validator("input_dim")
    @classmethod
    def _positive_dims(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(d <= 0 for d in value):
            raise ValueError(f"every entry of input_dim must be a positive integer, got {value}")
        return value

    @field_validator("likelihood")
    @classmethod
    def _known_likelihood(cls, value: str) -> str:
        from vaebench.likelihoods import list_likelihoods

        known = list_likelihoods()
        if value not in known:
            raise ValueError(f"unknown likelihood {value!r}; known: {', '.join(known)}")
        return value
