"""Train the quantized models (VQ-VAE, with restarts, EMA VQ-VAE, HRQ-VAE, FSQ-VAE, the VQ
techniques k-means init, rotation trick and cosine codes, LFQ-VAE, Gumbel VQ-VAE) and an AE
on mnist5k with the same spatial networks, and print a markdown table.

Every model uses the same encoder and decoder (``vaebench.nn.spatial``: 28 x 28 -> 7 x 7
grid of ``--latent-dim`` channels), the same likelihood, optimizer, batch size, epochs and
seed, so differences come from the bottleneck. The AE's latent is the same grid, left
continuous: the reference a quantizer can at best match. Columns: test reconstruction MSE
per pixel (posterior mean / quantized codes), codebook usage and perplexity over the last
training epoch and over the test set, and seconds per training epoch.

    python benchmarks/vq_family.py [--epochs 8] [--threads 1] [--sigma 1.0] [--prior]
                                   [--only 0,1,7] [--limit 256]

``--limit N`` keeps the first N training and test images (a smoke run, not a result).

``--prior`` also fits each quantized model's PixelCNN sampler (its default budget) and
reports its training NLL in nats per image.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.data import load_dataset
from vaebench.metrics import reconstruction_mse
from vaebench.nn import SpatialDecoder, SpatialEncoder
from vaebench.samplers import create_sampler


class FlatSpatialEncoder(nn.Module):
    """The spatial encoder with its grid flattened, for the AE's vector latent."""

    def __init__(self, input_dim, channels):
        super().__init__()
        self.net = SpatialEncoder(input_dim, channels)

    def forward(self, x):
        return self.net(x).flatten(1)


class FlatSpatialDecoder(nn.Module):
    def __init__(self, channels, output_shape, grid):
        super().__init__()
        self.shape = (channels, *grid)
        self.net = SpatialDecoder(channels, output_shape)

    def forward(self, z):
        return self.net(z.view(-1, *self.shape))


def variants(steps: int) -> list[tuple[str, str, dict]]:
    """(label, model, options) of each row; ``steps``, the run's optimizer steps, is the
    Gumbel temperature's annealing time."""
    return [
        ("AE (continuous 7x7 grid)", "ae", {}),
        ("VQ-VAE", "vqvae", {"num_codes": 512}),
        ("VQ-VAE + restarts", "vqvae", {"num_codes": 512, "restart_dead_codes": True,
                                        "dead_after": 20}),
        ("EMA VQ-VAE", "vqvae_ema", {"num_codes": 512}),
        ("EMA VQ-VAE + restarts", "vqvae_ema", {"num_codes": 512, "restart_dead_codes": True,
                                                "dead_after": 20}),
        ("HRQ-VAE (3 x 64 codes)", "hrqvae", {"depth": 3, "num_codes": 64}),
        ("FSQ-VAE (8,5,5,5)", "fsq_vae", {"levels": (8, 5, 5, 5)}),
        ("VQ-VAE + rotation trick", "vqvae", {"num_codes": 512, "rotation_trick": True}),
        ("VQ-VAE + k-means init", "vqvae", {"num_codes": 512, "kmeans_init": True}),
        ("VQ-VAE + k-means init + rotation trick", "vqvae",
         {"num_codes": 512, "kmeans_init": True, "rotation_trick": True}),
        ("VQ-VAE + k-means init + rotation trick + restarts", "vqvae",
         {"num_codes": 512, "kmeans_init": True, "rotation_trick": True,
          "restart_dead_codes": True, "dead_after": 20}),
        ("VQ-VAE + cosine codes", "vqvae", {"num_codes": 512, "cosine": True}),
        ("LFQ-VAE (10 bits)", "lfq_vae", {"latent_dim": 10}),
        ("Gumbel VQ-VAE", "gumbel_vqvae", {"num_codes": 512, "tau_anneal_steps": steps}),
    ]


def build(name: str, options: dict, latent_dim: int, sigma: float | str):
    if name == "ae":
        grid = (7, 7)
        return create_model(
            "ae", input_dim=(1, 28, 28), latent_dim=latent_dim * 49, sigma=sigma,
            encoder=FlatSpatialEncoder((1, 28, 28), latent_dim),
            decoder=FlatSpatialDecoder(latent_dim, (1, 28, 28), grid))
    return create_model(name, **{"input_dim": (1, 28, 28), "latent_dim": latent_dim,
                                 "sigma": sigma, "encoder": "spatial", "decoder": "spatial",
                                 **options})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--sigma", default="1.0", help="Gaussian scale: a number or 'data'")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated row numbers to run")
    parser.add_argument("--prior", action="store_true", help="also fit the PixelCNN priors")
    parser.add_argument("--limit", type=int, default=None,
                        help="use the first N training and test images (smoke runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        sigma: float | str = float(args.sigma)
    except ValueError:
        sigma = args.sigma

    train, _ = load_dataset("mnist5k", "train")
    test, _ = load_dataset("mnist5k", "test")
    train, test = train[:args.limit], test[:args.limit]
    rows = []
    chosen = variants(args.epochs * math.ceil(len(train) / args.batch_size))
    if args.only:
        chosen = [chosen[int(i)] for i in args.only.split(",")]
    for label, name, options in chosen:
        torch.manual_seed(args.seed)
        model = build(name, options, args.latent_dim, sigma)
        trainer = Trainer(model, TrainerConfig(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            seed=args.seed, device="cpu", progress=False, keep_best=False))
        history = trainer.fit(train)
        model.eval()
        row = {"model": label, "mse": reconstruction_mse(model, test),
               "seconds": statistics.median(r["seconds"] for r in history)}
        if name != "ae":
            last = history[-1]
            usage = model.code_usage(test)
            row.update(codes=model.quantizer.num_codes, train_usage=last["train_usage"],
                       train_perplexity=last["train_perplexity"], test_usage=usage["usage"],
                       test_perplexity=usage["perplexity"])
            if args.prior:
                start = time.perf_counter()
                nll = create_sampler("pixelcnn", model).fit(model, train)["train_nll"]
                row.update(prior_nll=nll, prior_seconds=time.perf_counter() - start)
        rows.append(row)
        print(f"done: {label}: {row}", flush=True)

    print(f"\nmnist5k ({len(train):,} train / {len(test):,} test), {args.epochs} epochs, batch "
          f"{args.batch_size}, Adam lr {args.lr}, Gaussian likelihood sigma={sigma}, "
          f"code dim {args.latent_dim} on a 7x7 grid, {args.threads} thread(s)\n")
    header = ["model", "codes", "test MSE/pixel", "usage (train)", "perplexity (train)",
              "usage (test)", "perplexity (test)", "s/epoch"]
    if args.prior:
        header += ["prior NLL (nats/image)", "prior fit (s)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        cells = [r["model"], str(r.get("codes", "-")), f"{r['mse']:.4f}"]
        for key, fmt in (("train_usage", ".2f"), ("train_perplexity", ".1f"),
                         ("test_usage", ".2f"), ("test_perplexity", ".1f")):
            cells.append(format(r[key], fmt) if key in r else "-")
        cells.append(f"{r['seconds']:.1f}")
        if args.prior:
            cells += [f"{r['prior_nll']:.1f}" if "prior_nll" in r else "-",
                      f"{r['prior_seconds']:.0f}" if "prior_seconds" in r else "-"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
