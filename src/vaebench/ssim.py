"""Structural similarity: SSIM (Wang, Bovik, Sheikh and Simoncelli, "Image quality
assessment: from error visibility to structural similarity", IEEE TIP 2004) and its
multi-scale form MS-SSIM (Wang, Simoncelli and Bovik, "Multiscale structural similarity
for image quality assessment", Asilomar 2003), per sample, differentiable.

With local means mu, variances s^2 and covariance s_xy taken under a Gaussian window, and
C1 = (K1 L)^2, C2 = (K2 L)^2 (K1 = 0.01, K2 = 0.03, L the data range):

    l(x, y)  = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)         luminance
    cs(x, y) = (2 s_xy + C2) / (s_x^2 + s_y^2 + C2)                 contrast * structure
    SSIM     = mean over window positions of l * cs

(the 2004 paper's C3 = C2 / 2, which merges contrast and structure into cs). The window is
applied without padding ("valid" positions only), as in the reference implementation.
MS-SSIM evaluates M scales, halving the image by 2 x 2 average pooling between them:

    MS-SSIM = SSIM_M ^ w_M * prod_{j < M} CS_j ^ w_j,

with CS_j the mean of cs at scale j and SSIM_M the mean of l * cs at the coarsest scale
(luminance only there), w = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) for M = 5 (Wang et al.
2003). Negative CS_j or SSIM_M (anti-correlated structure) are set to 0 before the powers,
so MS-SSIM lies in [0, 1], and equals 1 exactly when x = y. Images with several channels
get MS-SSIM per channel, averaged over channels.

**Small images.** The standard setting, an 11 x 11 window (Gaussian sigma 1.5) at 5 scales,
needs the coarsest scale, 1/16 of the image, to hold a window: at least 176 pixels with our
floor-halving. :func:`ms_ssim_plan` adapts to the image instead:

* window size w = the largest odd number <= min(H, W) / 4, at most 11 and at least 3, with
  Gaussian sigma = 1.5 w / 11 (the standard window's width relative to its size);
* M = the largest number of scales <= 5 whose coarsest image, min(H, W) halved M - 1
  times (rounding down), still holds a window;
* weights: the standard weights at M = 5; for fewer scales the first M of them (the finest
  scales) renormalized to sum to 1, so MS-SSIM stays a weighted geometric mean of the
  per-scale similarities.

So 28 x 28 (MNIST) gets w = 7 (sigma ~ 0.95) at 3 scales (28, 14, 7), 64 x 64 gets the
standard window at 3 scales (64, 32, 16), 8 x 8 gets w = 3 at 2 scales, and 176 x 176 or more
the standard 11 x 11 window at 5 scales. Images smaller than 3 x 3 are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Weights of the 5 scales of MS-SSIM (Wang, Simoncelli and Bovik 2003), finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
K1, K2 = 0.01, 0.03


@dataclass(frozen=True)
class MSSSIMPlan:
    """Window and scales of MS-SSIM for one image size (see :func:`ms_ssim_plan`)."""

    window_size: int
    sigma: float
    weights: tuple[float, ...]

    @property
    def scales(self) -> int:
        return len(self.weights)


def ms_ssim_plan(height: int, width: int, max_window: int = 11,
                 max_scales: int = 5) -> MSSSIMPlan:
    """The window size, its Gaussian sigma and the per-scale weights for an image of
    ``height`` x ``width`` pixels, by the rule in the module docstring."""
    side = min(height, width)
    if side < 3:
        raise ValueError(f"MS-SSIM needs images of at least 3 x 3 pixels, got {height} x "
                         f"{width}")
    if not 1 <= max_scales <= len(MS_SSIM_WEIGHTS):
        raise ValueError(f"max_scales must be between 1 and {len(MS_SSIM_WEIGHTS)}, got "
                         f"{max_scales}")
    window = side // 4 if (side // 4) % 2 == 1 else side // 4 - 1
    window = max(3, min(max_window, window))
    scales = 1
    while scales < max_scales and side >> scales >= window:
        scales += 1
    weights = MS_SSIM_WEIGHTS[:scales]
    if scales < len(MS_SSIM_WEIGHTS):
        weights = tuple(w / sum(weights) for w in weights)
    return MSSSIMPlan(window, 1.5 * window / 11, weights)


def gaussian_window(size: int, sigma: float, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The normalized 1-D Gaussian g of ``size`` taps; the 2-D window is g g^T."""
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_maps(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor,
               data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The luminance map l and the contrast-structure map cs at valid window positions,
    each (B, C, H - w + 1, W - w + 1), for images x, y (B, C, H, W)."""
    b, c, h, w = x.shape
    size = window.numel()
    # The five local moments of every channel in one separable, grouped convolution.
    stack = torch.stack([x, y, x * x, y * y, x * y], dim=2).view(b * c, 5, h, w)
    rows = window.view(1, 1, size, 1).expand(5, 1, size, 1)
    cols = window.view(1, 1, 1, size).expand(5, 1, 1, size)
    moments = F.conv2d(F.conv2d(stack, rows, groups=5), cols, groups=5)
    moments = moments.view(b, c, 5, h - size + 1, w - size + 1)
    mu_x, mu_y, xx, yy, xy = moments.unbind(2)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    return luminance, contrast_structure


def _check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.dim() != 4:
        raise ValueError(f"SSIM needs images of shape (B, C, H, W), got {tuple(x.shape)}")


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window_size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """SSIM per sample, shape (B,): the mean of l * cs over valid window positions and
    channels, with an ``window_size`` x ``window_size`` Gaussian window of ``sigma``."""
    _check_images(x, y)
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"images of {x.shape[-2]} x {x.shape[-1]} pixels are smaller than "
                         f"the {window_size} x {window_size} window")
    window = gaussian_window(window_size, sigma, x.dtype, x.device)
    luminance, contrast_structure = _ssim_maps(x, y, window, data_range)
    return (luminance * contrast_structure).flatten(1).mean(1)


def _safe_power(value: torch.Tensor, exponent: float) -> torch.Tensor:
    """max(value, 0) ** exponent, with a finite gradient everywhere (0 where value <= 0)."""
    positive = value > 0
    return torch.where(positive, value.clamp_min(1e-12) ** exponent, torch.zeros_like(value))


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0,
            plan: MSSSIMPlan | None = None) -> torch.Tensor:
    """MS-SSIM per sample, shape (B,), in [0, 1] (1 when x = y).

    ``plan`` (window, sigma, per-scale weights) defaults to :func:`ms_ssim_plan` for the
    image size. Computed per channel and averaged over channels.
    """
    _check_images(x, y)
    if plan is None:
        plan = ms_ssim_plan(*x.shape[-2:])
    needed = plan.window_size << (plan.scales - 1)
    if min(x.shape[-2:]) < needed:
        raise ValueError(f"images of {x.shape[-2]} x {x.shape[-1]} pixels are too small for "
                         f"{plan.scales} scales with a {plan.window_size}-pixel window "
                         f"(at least {needed} pixels)")
    window = gaussian_window(plan.window_size, plan.sigma, x.dtype, x.device)
    result = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    for scale, weight in enumerate(plan.weights):
        if scale > 0:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        luminance, contrast_structure = _ssim_maps(x, y, window, data_range)
        last = scale == plan.scales - 1
        similarity = luminance * contrast_structure if last else contrast_structure
        result = result * _safe_power(similarity.flatten(2).mean(2), weight)
    return result.mean(1)
