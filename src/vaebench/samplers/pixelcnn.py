"""A gated PixelCNN over grids of discrete codes: the prior of quantized models.

van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves and Kavukcuoglu, "Conditional Image
Generation with PixelCNN Decoders" (NeurIPS 2016). The grid is modelled autoregressively in
raster order, p(c) = prod_p p(c_p | c_<p), by two stacks of masked convolutions:

* a *vertical* stack whose features at row i see the rows <= i (a (k//2 + 1) x k kernel,
  padded above); it reaches the horizontal stack only shifted down by one row, so that
  position (i, j) receives information from rows < i, every column -- no blind spot;
* a *horizontal* stack whose features at (i, j) see (i, j' <= j) (a 1 x (k//2 + 1) kernel,
  padded on the left); in the first layer its input is shifted right by one, so that
  position (i, j) never sees its own code.

Each layer uses the gated activation tanh(W_f * x) * sigmoid(W_g * x) (Eq. 2 of the paper),
the vertical stack's pre-activations feed the horizontal one through a 1 x 1 convolution,
and the horizontal stack is residual after its first layer (Fig. 2).

Several codes per position (residual quantization, ``depth`` > 1) are modelled as levels:
p(c_p | c_<p) = prod_l p(c_{p,l} | c_<p, c_{p,<l}). Level l's head reads the stacks'
features at p plus embeddings of the codes of the lower levels at p, so a position's codes
are drawn coarse to fine after all earlier positions. Depth 1 is the plain PixelCNN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from vaebench.data.sources import as_data
from vaebench.evaluation import evaluating
from vaebench.samplers.base import Sampler, SamplerConfig
from vaebench.samplers.registry import register_sampler

__all__ = ["GatedPixelCNN", "PixelCNNSampler", "PixelCNNSamplerConfig"]


def _gate(x: torch.Tensor) -> torch.Tensor:
    filters, gates = x.chunk(2, dim=1)
    return torch.tanh(filters) * torch.sigmoid(gates)


class GatedLayer(nn.Module):
    """One layer of the vertical and horizontal stacks (Fig. 2 of van den Oord et al. 2016).

    ``first``: the horizontal input is shifted right by one (mask "A": the current position
    is excluded) and there is no residual connection.
    """

    def __init__(self, channels: int, kernel_size: int, first: bool = False):
        super().__init__()
        self.first = first
        self.pad = kernel_size // 2
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.pad + 1, kernel_size))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, self.pad + 1))
        self.horizontal_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.pad
        # F.pad order: (left, right, top, bottom). Output row i covers input rows i-p..i.
        v_pre = self.vertical(F.pad(v, (p, p, p, 0)))
        # Down-shift: row i of the horizontal stack gets vertical features of rows < i.
        v_down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]
        h_in = F.pad(h, (1, 0))[..., :-1] if self.first else h
        h_pre = self.horizontal(F.pad(h_in, (p, 0, 0, 0))) + self.vertical_to_horizontal(v_down)
        h_out = self.horizontal_out(_gate(h_pre))
        if not self.first:
            h_out = h_out + h
        return _gate(v_pre), h_out


class GatedPixelCNN(nn.Module):
    """Autoregressive model of code grids (B, depth, h, w), values in 0..num_codes - 1.

    ``log_prob(indices)`` gives log p per sample, in nats, shape (B,); ``sample(n)`` draws
    grids in raster order (one network pass per position); ``fit(indices, ...)`` trains it
    by maximum likelihood.
    """

    def __init__(self, num_codes: int, grid_shape: Sequence[int], depth: int = 1,
                 channels: int = 32, layers: int = 5, kernel_size: int = 5):
        super().__init__()
        grid_shape = tuple(int(s) for s in grid_shape)
        if len(grid_shape) != 2 or min(grid_shape) < 1:
            raise ValueError(f"grid_shape must be (h, w) with positive entries, got {grid_shape}")
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
        if min(num_codes, depth, channels, layers) < 1:
            raise ValueError("num_codes, depth, channels and layers must be positive")
        self.num_codes, self.grid_shape, self.depth = num_codes, grid_shape, depth
        self.embed = nn.ModuleList(nn.Embedding(num_codes, channels) for _ in range(depth))
        self.layers = nn.ModuleList(GatedLayer(channels, kernel_size, first=i == 0)
                                    for i in range(layers))
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1))
        self.lower_embed = nn.ModuleList(nn.Embedding(num_codes, channels)
                                         for _ in range(depth - 1))
        self.heads = nn.ModuleList(nn.Linear(channels, num_codes) for _ in range(depth))

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, grid_shape={self.grid_shape}, depth={self.depth}"

    def _check(self, indices: torch.Tensor) -> None:
        want = (self.depth, *self.grid_shape)
        if indices.dim() != 4 or tuple(indices.shape[1:]) != want:
            raise ValueError(f"code indices must have shape (B, {', '.join(map(str, want))}), "
                             f"got {tuple(indices.shape)}")

    def features(self, indices: torch.Tensor) -> torch.Tensor:
        """Causal features (B, h, w, channels): position p depends only on codes before p."""
        x = sum(embed(indices[:, level]) for level, embed in enumerate(self.embed))
        x = x.permute(0, 3, 1, 2)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h)
        return self.out(h).permute(0, 2, 3, 1)

    def head(self, level: int, features: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        """Logits (..., num_codes) of ``level`` from ``features`` (..., channels) and the
        codes (..., depth) of the same positions, of which only levels < ``level`` are read."""
        hidden = features
        for k in range(level):
            hidden = hidden + self.lower_embed[k](lower[..., k])
        return self.heads[level](F.relu(hidden))

    def logits(self, indices: torch.Tensor) -> torch.Tensor:
        """Logits (B, depth, h, w, num_codes) of every code given the codes before it."""
        self._check(indices)
        feats = self.features(indices)
        lower = indices.permute(0, 2, 3, 1)
        return torch.stack([self.head(level, feats, lower) for level in range(self.depth)], 1)

    def log_prob(self, indices: torch.Tensor) -> torch.Tensor:
        """log p(indices) per sample in nats, shape (B,)."""
        log_p = F.log_softmax(self.logits(indices), dim=-1)
        return log_p.gather(-1, indices.unsqueeze(-1)).squeeze(-1).flatten(1).sum(1)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
        """``n`` grids (n, depth, h, w) drawn in raster order, levels coarse to fine."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        device = device if device is not None else self.heads[0].weight.device
        codes = torch.zeros(n, self.depth, *self.grid_shape, dtype=torch.long, device=device)
        rows, cols = self.grid_shape
        with evaluating(self):
            for i in range(rows):
                for j in range(cols):
                    # Rows below i cannot influence row i: leave them out.
                    feats = self.features(codes[:, :, : i + 1])[:, i, j]
                    for level in range(self.depth):
                        logits = self.head(level, feats, codes[:, :, i, j]) / temperature
                        draw = torch.multinomial(F.softmax(logits.float(), dim=-1), 1,
                                                 generator=generator)
                        codes[:, level, i, j] = draw.squeeze(1)
        return codes

    def fit(self, indices: torch.Tensor, epochs: int = 10, batch_size: int = 64,
            lr: float = 1e-3, generator: torch.Generator | None = None,
            progress: bool = False) -> list[float]:
        """Maximum likelihood on code grids ``indices`` (N, depth, h, w) with Adam.

        Returns the mean negative log-likelihood (nats per grid) of each epoch.
        """
        self._check(indices)
        if epochs < 0 or batch_size < 1 or lr <= 0:
            raise ValueError("epochs must be >= 0, batch_size and lr positive")
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        was_training = self.training
        self.train()
        history = []
        try:
            for epoch in range(epochs):
                order = torch.randperm(len(indices), generator=generator).to(indices.device)
                total = torch.zeros((), device=indices.device)
                for start in range(0, len(indices), batch_size):
                    batch = indices[order[start:start + batch_size]]
                    nll = -self.log_prob(batch)
                    loss = nll.mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += nll.detach().sum()
                history.append(float(total) / len(indices))
                if not math.isfinite(history[-1]):
                    raise FloatingPointError(f"the PixelCNN loss became {history[-1]} in epoch "
                                             f"{epoch + 1}; lower the learning rate")
                if progress:
                    print(f"prior epoch {epoch + 1}/{epochs}: {history[-1]:.2f} nats per grid")
        finally:
            self.train(was_training)
        return history


class PixelCNNSamplerConfig(SamplerConfig):
    """Size and fitting budget of the PixelCNN, and the sampling temperature."""

    channels: int = Field(32, gt=0, description="feature channels")
    layers: int = Field(5, gt=0, description="gated layers")
    kernel_size: int = Field(5, ge=3, description="kernel size (odd)")
    epochs: int = Field(10, gt=0, description="epochs of fitting")
    batch_size: int = Field(64, gt=0, description="code grids per step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of sampling")

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {value}")
        return value


@register_sampler
class PixelCNNSampler(Sampler):
    """A gated PixelCNN fitted on the code grids of a quantized model (van den Oord et al.
    2017, Sec. 3.2). Draws code indices (n, depth, h, w), decoded through the codebook."""

    name = "pixelcnn"
    config_class = PixelCNNSamplerConfig
    needs_fitting = True

    @classmethod
    def refusal(cls, model: nn.Module) -> str | None:
        if not hasattr(model, "code_indices"):
            return "it models grids of discrete codes, and this model's latent is continuous"
        return None

    def build(self, model: nn.Module) -> None:
        cfg = self.config
        self.pixelcnn = GatedPixelCNN(model.quantizer.num_codes, model.code_grid_shape,
                                      depth=model.quantizer.depth, channels=cfg.channels,
                                      layers=cfg.layers, kernel_size=cfg.kernel_size)
        self.register_buffer("train_nll", torch.full((), math.nan))

    @torch.no_grad()
    def training_codes(self, model: nn.Module, data) -> torch.Tensor:
        return torch.cat([model.code_indices(x)
                          for x in as_data(data).batches(512, device=self._device(model))])

    def fit_codes(self, codes: torch.Tensor, seed: int, progress: bool) -> dict[str, float]:
        cfg = self.config
        history = self.pixelcnn.fit(codes, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                    lr=cfg.lr, generator=torch.Generator().manual_seed(seed),
                                    progress=progress)
        self.train_nll.fill_(history[-1])
        return {"train_nll": history[-1]}

    def draw(self, model: nn.Module, n: int) -> torch.Tensor:
        return self.pixelcnn.sample(n, self.config.temperature, device=self._device(model))

    def decode(self, model: nn.Module, codes: torch.Tensor) -> torch.Tensor:
        return model.decode_indices(codes)
