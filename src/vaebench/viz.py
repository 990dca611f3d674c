"""Figures written by the command line and the benchmark report: image grids,
labelled reconstructions and loss curves."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch


def is_image_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[0] in (1, 3)


def image_grid(images: torch.Tensor, ncol: int = 8, pad: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [0, 1] into one uint8 array (H', W') or (H', W', 3)."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrow = -(-n // ncol)
    grid = torch.ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i]
    array = (grid * 255).round().to(torch.uint8).numpy()
    return array[0] if c == 1 else array.transpose(1, 2, 0)


def save_image_grid(images: torch.Tensor, path: str | Path, ncol: int = 8,
                    scale: int = 2) -> Path:
    """Write ``images`` as a PNG grid, each pixel drawn ``scale`` x ``scale``."""
    from PIL import Image

    array = image_grid(images, ncol)
    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | Path) -> Path:
    """Write ``figure`` as a PNG (its labels kept inside) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    pyplot().close(figure)
    return path


def image_rows_figure(rows: list[tuple[str, torch.Tensor]], ncol: int,
                      title: str | None = None) -> Any:
    """One band of images per (label, N x C x H x W images in [0, 1]) pair, labelled on
    its left; a band holds ``ncol`` images per line."""
    plt = pyplot()
    arrays = [(label, image_grid(images, ncol=ncol)) for label, images in rows]
    width = max(array.shape[1] for _, array in arrays)
    heights = [array.shape[0] for _, array in arrays]
    inches = 7.0
    figure, axes = plt.subplots(len(arrays), 1, squeeze=False, figsize=(
        inches + 1.8, inches * sum(heights) / width + 0.5 + 0.1 * len(arrays)),
        gridspec_kw={"height_ratios": heights})
    for ax, (label, array) in zip(axes[:, 0], arrays, strict=True):
        ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    figure.tight_layout()
    if title:
        figure.suptitle(title, fontsize=10, y=1.0, va="bottom")  # above the bands
    return figure


def reconstructions_figure(originals: torch.Tensor, reconstructions: torch.Tensor,
                           ncol: int = 8) -> Any:
    """Bands of up to ``ncol`` originals, each above the band of their reconstructions,
    labelled "original" and "reconstruction". The images are laid out as given, each once:
    callers pass distinct samples."""
    ncol = min(ncol, len(originals))
    rows = []
    for start in range(0, len(originals), ncol):
        block = slice(start, start + ncol)
        rows += [("original", originals[block]), ("reconstruction", reconstructions[block])]
    return image_rows_figure(rows, ncol)


def save_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor,
                         path: str | Path, ncol: int = 8) -> Path:
    """Write :func:`reconstructions_figure` as a PNG (callers pass distinct samples)."""
    return save_figure(reconstructions_figure(originals, reconstructions, ncol), path)


def _history_entries(history: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(loss terms, training statistics): the names recorded per epoch besides the loss.

    The trainer's evaluation records the loss and each term; epoch statistics (a
    codebook's usage and perplexity, a discriminator's loss, ...) are measured in training
    only, so a train entry without an eval one is a statistic. Without eval entries every
    train entry is taken as a term.
    """
    names = sorted({key.removeprefix("train_") for record in history for key in record
                    if key.startswith("train_")} - {"loss"})
    if not any("eval_loss" in record for record in history):
        return names, []
    terms = [name for name in names if any(f"eval_{name}" in record for record in history)]
    return terms, [name for name in names if name not in terms]


def loss_curve_figure(history: list[dict[str, Any]]) -> Any:
    """Train and eval loss per epoch, the loss terms in a second panel (both in nats per
    sample), and each training statistic (not in nats) in a panel of its own; levels of
    one statistic (``usage_1``, ``usage_2``) share its panel. Epoch ticks are integers."""
    from matplotlib.ticker import MaxNLocator

    panels = _loss_panels(history)
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    figure, axes = pyplot().subplots(nrows, ncols, squeeze=False,
                                     figsize=(4.4 * ncols, 3.6 * nrows))
    for ax in axes.flat[len(panels):]:
        ax.remove()
    for ax, (title, names) in zip(axes.flat[:len(panels)], panels.items(), strict=True):
        _plot_entries(ax, history, names)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _loss_panels(history: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The names each panel of :func:`loss_curve_figure` plots, by panel title."""
    terms, statistics = _history_entries(history)
    panels = {"loss (nats per sample)": ["loss"]}
    if terms:
        panels["terms (nats per sample)"] = terms
    for name in statistics:
        panels.setdefault(f"{re.sub(r'_[0-9]+$', '', name)} (training)", []).append(name)
    return panels


def _plot_entries(ax: Any, history: list[dict[str, Any]], names: list[str]) -> None:
    """A line per split and name that the history records (eval dashed)."""
    epochs = [record["epoch"] for record in history]
    for split, style in (("train", "-"), ("eval", "--")):
        for name in names:
            key = f"{split}_{name}"
            if any(key in record for record in history):
                ax.plot(epochs, [record.get(key, math.nan) for record in history], style,
                        marker="o", markersize=3, label=f"{split} {name}")


def save_loss_curve(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Write :func:`loss_curve_figure` as a PNG."""
    return save_figure(loss_curve_figure(history), path)
