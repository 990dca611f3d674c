"""Speed of the importance-sampled log-likelihood: vectorized vs one sample at a time.

The same VAE, the same test images and the same K: ``vaebench.metrics.log_likelihood``
(all samples of a batch and their K draws decoded together, draws in chunks) against

* a per-sample loop: one image at a time, its K draws in one batch, the image encoded once;
* a pythae-style loop, the algorithm of pythae's ``VAE.get_nll`` (one image at a time, the
  image repeated K times and encoded K times, its K draws decoded in one batch, the result
  moved to the host with ``.item()``), written here so it runs without pythae;
* pythae's own ``get_nll`` on a pythae VAE given the same weights, when ``import pythae``
  works (skipped otherwise).

Two settings: mnist5k with the default MLP (hidden 512 and 256, latent 16), where a CPU
spends its time in the decoder's matrix products, and the 8 x 8 digits with a small MLP
(hidden 128, latent 4), where the per-call overhead dominates. Each timing is the best of
``--repeats`` runs. Usage: ``python benchmarks/nll_speed.py [--threads 1] [--k 100]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable

import torch

from vaebench import VAE, Trainer, TrainerConfig
from vaebench.data import load_dataset
from vaebench.metrics import log_likelihood


@torch.no_grad()
def per_sample_loop(model: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """One image at a time; its k draws in one batch (the image encoded once)."""
    out = []
    for i in range(len(x)):
        log_w = model.log_importance_weights(x[i:i + 1], k)
        out.append((torch.logsumexp(log_w, 0) - math.log(k)).item())
    return torch.tensor(out, dtype=torch.float64)


@torch.no_grad()
def pythae_style_loop(model: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """The algorithm of pythae's VAE.get_nll: the image repeated k times through the encoder,
    k draws decoded together, one .item() per image."""
    out = []
    latent = model.config.latent_dim
    for i in range(len(x)):
        x_rep = torch.cat(k * [x[i:i + 1]])
        h = model.encoder(x_rep)
        mu, log_var = h[:, :latent], h[:, latent:]
        std = torch.exp(0.5 * log_var)
        z = mu + std * torch.randn_like(std)
        log_q = (-0.5 * (log_var + (z - mu) ** 2 / torch.exp(log_var) + math.log(2 * math.pi))
                 ).sum(-1)
        log_pz = (-0.5 * (z**2 + math.log(2 * math.pi))).sum(-1)
        log_px = -model.likelihood.nll(model.decode(z), x_rep)
        log_w = log_px + log_pz - log_q
        out.append((torch.logsumexp(log_w, 0) - math.log(k)).item())
    return torch.tensor(out, dtype=torch.float64)


def best_time(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def pythae_get_nll(model: VAE, x: torch.Tensor, k: int) -> Callable[[], float] | None:
    """A pythae VAE with our networks' weights, if pythae is installed."""
    try:
        import pythae  # noqa: F401
        from pythae.models import VAE as PythaeVAE
        from pythae.models import VAEConfig as PythaeConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
    except ImportError:
        return None
    latent = model.config.latent_dim

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = model.encoder

        def forward(self, inputs):
            h = self.net(inputs)
            return ModelOutput(embedding=h[:, :latent], log_covariance=h[:, latent:])

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = model.decoder

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    config = PythaeConfig(input_dim=tuple(x.shape[1:]), latent_dim=latent,
                          reconstruction_loss="mse")
    theirs = PythaeVAE(config, encoder=Encoder(), decoder=Decoder()).eval()
    return lambda: theirs.get_nll(x, n_samples=k, batch_size=k)


@torch.no_grad()
def decoder_alone(model: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """Only the decoder on the n * k codes, 2048 at a time: a floor for any method."""
    z = torch.randn(len(x) * k, model.config.latent_dim)
    for start in range(0, len(z), 2048):
        model.decode(z[start:start + 2048])
    return torch.zeros(len(x), dtype=torch.float64)


def run_setting(name: str, model: VAE, x: torch.Tensor, k: int, repeats: int) -> None:
    model.eval()
    rows = []
    t_vec, vec = best_time(lambda: log_likelihood(model, x, k=k), repeats)
    rows.append(("vaebench log_likelihood (vectorized, chunked)", t_vec, vec))
    t_loop, loop = best_time(lambda: per_sample_loop(model, x, k), repeats)
    rows.append(("per-sample loop (encode once, K draws batched)", t_loop, loop))
    t_py, py = best_time(lambda: pythae_style_loop(model, x, k), repeats)
    rows.append(("pythae-style loop (get_nll's algorithm)", t_py, py))
    t_dec, _ = best_time(lambda: decoder_alone(model, x, k), repeats)
    theirs = pythae_get_nll(model, x, k)
    print(f"\n## {name}: {len(x)} images, K={k}")
    print("| method | seconds | images/s | vectorized is x faster | mean log p(x) (nats) |")
    print("| --- | --- | --- | --- | --- |")
    for label, seconds, values in rows:
        se = float(values.std() / math.sqrt(len(values)))
        print(f"| {label} | {seconds:.3f} | {len(x) / seconds:.1f} | {seconds / t_vec:.1f} "
              f"| {float(values.mean()):.2f} ± {se:.2f} |")
    print(f"| (the decoder alone on the {len(x) * k} codes: a floor for any method) "
          f"| {t_dec:.3f} | {len(x) / t_dec:.1f} | {t_dec / t_vec:.1f} | |")
    if theirs is None:
        print("| pythae get_nll | skipped: pythae is not installed | | | |")
    else:
        seconds, value = best_time(lambda: torch.tensor([theirs()]), 1)
        print(f"| pythae get_nll | {seconds:.3f} | {len(x) / seconds:.1f} | "
              f"{seconds / t_vec:.1f} | {float(value):.2f} (its own constants) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--n", type=int, default=300, help="mnist5k test images timed")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}, "
          f"device cpu; each time is the best of {args.repeats} runs")

    train, _ = load_dataset("mnist5k", "train")
    test, _ = load_dataset("mnist5k", "test")
    torch.manual_seed(0)
    model = VAE(input_dim=(1, 28, 28), latent_dim=16, sigma=0.1)
    Trainer(model, TrainerConfig(epochs=1, progress=False, device="cpu")).fit(train)
    run_setting("mnist5k, MLP 784-512-256-16 VAE, gaussian sigma=0.1 (trained 1 epoch)", model,
                test[:args.n], args.k, args.repeats)

    train, _ = load_dataset("digits", "train")
    test, _ = load_dataset("digits", "test")
    torch.manual_seed(0)
    small = VAE(input_dim=(1, 8, 8), latent_dim=4, encoder_kwargs={"hidden": [128]},
                decoder_kwargs={"hidden": [128]})
    Trainer(small, TrainerConfig(epochs=5, progress=False, device="cpu")).fit(train)
    run_setting("digits 8x8, MLP 64-128-4 VAE (trained 5 epochs)", small, test, args.k,
                args.repeats)


if __name__ == "__main__":
    main()
