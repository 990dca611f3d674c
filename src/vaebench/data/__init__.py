"""Datasets: bundled ones by name, and user data of many forms."""

from __future__ import annotations

from pathlib import Path

import torch

from vaebench.data.sources import ArrayData, as_data, load_image_folder

DATASETS = ("mnist", "mnist5k", "digits", "dsprites")

__all__ = ["DATASETS", "ArrayData", "as_data", "load_dataset", "load_image_folder"]


def load_dataset(name: str, split: str = "train", root: str | Path | None = None,
                 **options) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) float32 in [0, 1] and labels of a bundled dataset.

    ``"mnist"`` (60,000 / 10,000; ``root`` or ``VAEBENCH_DATA`` may point to the standard
    files), ``"mnist5k"`` (4,000 / 1,000), ``"digits"`` (8 x 8), ``"dsprites"`` (64 x 64,
    labels are the factor indices; ``n`` and ``seed`` choose a subset).
    """
    if name == "mnist":
        from vaebench.data.datasets import load_mnist

        return load_mnist(split, root=root)
    if name == "mnist5k":
        from vaebench.data.datasets import load_mnist5k

        return load_mnist5k(split)
    if name == "digits":
        from vaebench.data.datasets import load_digits

        return load_digits(split)
    if name == "dsprites":
        from vaebench.data.dsprites import load_dsprites

        return load_dsprites(split=split, **options)
    raise ValueError(f"unknown dataset {name!r}; bundled datasets: {', '.join(DATASETS)}")
