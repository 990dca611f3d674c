"""Datasets: bundled ones by name, and user data of many forms."""

from __future__ import annotations

from pathlib import Path

import torch

from vaebench.data.sources import ArrayData, as_data, load_image_folder, seeded_order
from vaebench.data.table_datasets import TABLES
from vaebench.data.tables import TableData, TableSchema, infer_schema, is_table, load_table

DATASETS = ("mnist", "mnist5k", "digits", "dsprites")
#: dSprites images generated for a training run unless told otherwise.
DSPRITES_TRAIN_SIZE = 20000

__all__ = ["DATASETS", "DSPRITES_TRAIN_SIZE", "TABLES", "ArrayData", "TableData",
           "TableSchema", "as_data", "infer_schema", "load_dataset", "load_image_folder",
           "load_table", "load_train_test"]


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


def load_train_test(dataset: str, *, train_size: int | None = None, seed: int = 0,
                    data_root: str | Path | None = None,
                    skip_bad_images: bool = False,
                    mode_specific: bool = False) -> tuple[ArrayData, ArrayData]:
    """(train, test) as ``vaebench train`` and ``vaebench benchmark`` use them: a bundled
    dataset's splits (dsprites: ``train_size`` generated images and a quarter as many, at
    least 1000, for the test), or user data split 90 / 10 by ``seed``; then ``train_size``
    training samples drawn by ``seed``. Labelled data are drawn class-balanced (see
    :func:`~vaebench.data.sources.seeded_order`), so the first samples of either split hold
    every class in proportion. ``skip_bad_images``: leave out (with a warning) the
    unreadable files of an image folder instead of failing. A table (a bundled one of
    :data:`TABLES`, or a .csv / .parquet file) is encoded as a whole by its inferred schema
    (:func:`load_table`; ``mode_specific``: its numeric columns by TVAE's mode-specific
    normalization), then split like user data."""
    if dataset == "dsprites":  # generated: draw only the images the run uses
        n = train_size or DSPRITES_TRAIN_SIZE
        train = as_data(load_dataset("dsprites", "train", n=n, seed=seed), name="train data")
        test = as_data(load_dataset("dsprites", "test", n=max(1000, n // 4), seed=seed),
                       name="test data")
    elif dataset in DATASETS:
        train = as_data(load_dataset(dataset, "train", root=data_root), name="train data")
        test = as_data(load_dataset(dataset, "test", root=data_root), name="test data")
    else:
        if is_table(dataset):
            data = load_table(dataset, name=str(dataset), mode_specific=mode_specific)
        else:
            data = as_data(dataset, name=str(dataset), skip_bad_images=skip_bad_images)
        order = seeded_order(data, seed)
        n_test = max(1, len(data) // 10)
        test = data.subset(order[:n_test], "test data")
        train = data.subset(order[n_test:], "train data")
    if train_size is not None and train_size < len(train):
        train = train.subset(seeded_order(train, seed)[:train_size])
    return train, test
