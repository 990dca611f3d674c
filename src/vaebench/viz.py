"""Figures written by the command line: image grids and loss curves."""

from __future__ import annotations

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


def save_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor,
                         path: str | Path, ncol: int = 8, scale: int = 2) -> Path:
    """Rows of originals, each directly above the row of their reconstructions."""
    rows = []
    for start in range(0, len(originals), ncol):
        rows += [originals[start:start + ncol], reconstructions[start:start + ncol]]
    return save_image_grid(torch.cat(rows), path, ncol, scale)


def save_loss_curve(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Train and eval loss per epoch (and each term, in a second panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    terms = sorted({k[len("train_"):] for r in history for k in r
                    if k.startswith("train_") and k != "train_loss"})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "-"), ("eval", "--")):
        if f"{split}_loss" in history[0]:
            axes[0].plot(epochs, [r[f"{split}_loss"] for r in history], style, marker="o",
                         label=f"{split} loss")
            for term in terms:
                if f"{split}_{term}" in history[0]:
                    axes[1].plot(epochs, [r[f"{split}_{term}"] for r in history], style,
                                 marker=".", label=f"{split} {term}")
    axes[0].set_title("loss (nats per sample)")
    axes[1].set_title("terms (nats per sample)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
