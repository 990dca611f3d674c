"""Trainer settings."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from vaebench.config import Config

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad")
SCHEDULERS = ("none", "step", "exponential", "cosine", "plateau", "onecycle")
PRECISIONS = ("fp32", "bf16", "fp16")


def check_device(value: str) -> str:
    """A device name the trainer understands: 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    if value != "auto" and value.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}")
    return value


class TrainerConfig(Config):
    """How to train: budget, optimizer, schedule, seed, device and what to save."""

    epochs: int = Field(10, gt=0)
    batch_size: int = Field(64, gt=0)
    eval_batch_size: int = Field(512, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    optimizer: str = "adam"
    optimizer_kwargs: dict[str, Any] = Field(default_factory=dict)
    group_optimizers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per parameter group (e.g. 'discriminator'): optimizer, learning_rate, "
                    "optimizer_kwargs overriding the model's defaults and the fields above")
    scheduler: str = "none"
    scheduler_kwargs: dict[str, Any] = Field(default_factory=dict)
    grad_clip_norm: float | None = Field(None, gt=0)
    seed: int = 0
    device: str = "auto"
    drop_last: bool = Field(False, description="leave out each epoch's last rows that do "
                            "not fill a batch")
    even_batches: bool = Field(False, description="cut each epoch into ceil(n / batch_size) "
                               "batches whose sizes differ by at most one, instead of full "
                               "batches and a smaller last one (for small data: 512 rows at "
                               "batch 500 make two steps of 256, not 500 and 12)")
    output_dir: str | None = None
    checkpoint_every: int | None = Field(None, gt=0, description="epochs between checkpoints")
    keep_best: bool = Field(True, description="restore the weights of the best eval epoch")
    overwrite: bool = Field(False, description="replace a run already in output_dir (else "
                                               "refused: resume it or choose a new folder)")
    progress: bool = True
    log_every: int = Field(20, gt=0, description="steps between progress-bar updates")
    precision: str = Field("fp32", description="'bf16' (CUDA, or a CPU with native bfloat16) "
                           "or 'fp16' (CUDA, with loss scaling): encoder and decoder under "
                           "autocast, every loss term in float32")
    compile: bool = Field(False, description="torch.compile the encoder and decoder")
    compile_backend: str = Field("inductor", description="torch.compile backend, e.g. "
                                 "'inductor' (needs a C compiler on a CPU) or 'eager'")
    channels_last: bool = Field(False, description="conv networks and image batches in "
                                "channels-last memory format")

    @field_validator("optimizer", "scheduler", "precision")
    @classmethod
    def _known_name(cls, value: str, info: ValidationInfo) -> str:
        known = {"optimizer": OPTIMIZERS, "scheduler": SCHEDULERS,
                 "precision": PRECISIONS}[info.field_name]
        if value.lower() not in known:
            raise ValueError(f"unknown {info.field_name} {value!r}; choose one of "
                             f"{', '.join(known)}")
        return value.lower()

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device(value)

    @field_validator("compile_backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        import torch

        known = torch.compiler.list_backends(exclude_tags=())
        if value not in known:
            raise ValueError(f"unknown compile_backend {value!r}; choose one of "
                             f"{', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _one_way_to_batch(self) -> TrainerConfig:
        if self.drop_last and self.even_batches:
            raise ValueError("drop_last and even_batches are two ways to cut an epoch: "
                             "choose one")
        return self
