"""Typed, validated, JSON-serializable configs shared by models and the trainer."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class Config(BaseModel):
    """Base of every config: unknown fields are errors, values are checked on assignment, and
    float fields refuse NaN and +/-inf."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def resolve_config(config_class: type[Config], config: Config | None, fields: dict[str, Any],
                   owner: str) -> Config:
    """The config of an object built from either a ``config`` of ``config_class`` or its
    ``fields`` (not both); ``owner`` names the object in errors."""
    if config is None:
        return config_class(**fields)
    if fields:
        raise TypeError("give either a config or config fields, not both")
    if not isinstance(config, config_class):
        raise TypeError(f"{owner} needs a {config_class.__name__}, got {type(config).__name__}")
    return config


class LikelihoodOptions(Config):
    """The reconstruction likelihood and its scale, checked together (models, benchmarks)."""

    likelihood: str = Field("gaussian", description="reconstruction distribution p(x|z)",
                            validate_default=True)
    sigma: float | str = Field(
        1.0, description="Gaussian scale: a positive number, or 'learned' / 'optimal' / 'data'",
        validate_default=True)
    sigma_per: str = Field("scalar", description="learned or optimal sigma: 'scalar', "
                           "'channel' or 'pixel'", validate_default=True)

    # likelihood, sigma and sigma_per must fit together (e.g. sigma='optimal' is Gaussian
    # only). Fields validate in order (all three validate their defaults too), so sigma is
    # checked against likelihood and sigma_per against both; on assignment the other fields
    # are in ``info.data``, so a bad combination is refused before it is stored. Errors name
    # the field.
    #: Whether ``likelihood="auto"`` (chosen from the data when it is loaded) is accepted: by
    #: settings of commands and benchmarks, never by a model.
    accepts_auto: ClassVar[bool] = False

    @field_validator("likelihood")
    @classmethod
    def _known_likelihood(cls, value: str, info: ValidationInfo) -> str:
        from vaebench.likelihoods import AUTO, check_sigma, check_sigma_per, list_likelihoods

        known = list_likelihoods(data_built=True) + ([AUTO] if cls.accepts_auto else [])
        if value not in known:
            raise ValueError(f"unknown likelihood {value!r}; known: {', '.join(known)}")
        if "sigma" in info.data:  # assignment: the other fields are already set
            check_sigma(value, info.data["sigma"])
            if "sigma_per" in info.data:
                check_sigma_per(value, info.data["sigma"], info.data["sigma_per"])
        return value

    @field_validator("sigma", mode="before")
    @classmethod
    def _normalized_sigma(cls, value: Any) -> float | str:
        """Normalized before the float | str check, so inf or NaN get normalize_sigma's error."""
        from vaebench.likelihoods import normalize_sigma

        return normalize_sigma(value)

    @field_validator("sigma")
    @classmethod
    def _valid_sigma(cls, value: float | str, info: ValidationInfo) -> float | str:
        from vaebench.likelihoods import check_sigma, check_sigma_per

        if "likelihood" in info.data:
            check_sigma(info.data["likelihood"], value)
            if "sigma_per" in info.data:  # assignment
                check_sigma_per(info.data["likelihood"], value, info.data["sigma_per"])
        return value

    @field_validator("sigma_per")
    @classmethod
    def _valid_sigma_per(cls, value: str, info: ValidationInfo) -> str:
        from vaebench.likelihoods import SIGMA_PER, check_sigma_per

        if value not in SIGMA_PER:
            raise ValueError(f"sigma_per must be one of {', '.join(map(repr, SIGMA_PER))}, "
                             f"got {value!r}")
        if "likelihood" in info.data and "sigma" in info.data:
            check_sigma_per(info.data["likelihood"], info.data["sigma"], value)
        return value


class ModelConfig(LikelihoodOptions):
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
    likelihood_kwargs: dict[str, Any] = Field(
        default_factory=dict, validate_default=True,
        description="what a likelihood built from the data needs: the 'mixed' likelihood's "
                    "{'table': schema} (vaebench.data.load_table)")

    @field_validator("input_dim")
    @classmethod
    def _positive_dims(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(d <= 0 for d in value):
            raise ValueError(f"every entry of input_dim must be a positive integer, got {value}")
        return value

    @field_validator("likelihood_kwargs")
    @classmethod
    def _kwargs_fit_likelihood(cls, value: dict[str, Any],
                               info: ValidationInfo) -> dict[str, Any]:
        from vaebench.likelihoods import check_likelihood_kwargs

        if "likelihood" in info.data:
            check_likelihood_kwargs(info.data["likelihood"], value, info.data.get("input_dim"))
        return value
