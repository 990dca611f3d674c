"""Train every registered model on mnist5k with the same networks, budget and seed, and
print a markdown table of what each achieves.

Every model gets the same MLP encoder and decoder (the library default, hidden layers 512
and 256), the same likelihood, latent size, batch size, learning rate, number of epochs and
seed, so the differences come from the objectives. Columns, on the 1,000 test images:

* recon MSE/pixel: mean squared error per pixel of the reconstruction (posterior mean);
* KL: mean of the model's ``kl`` term (nats per image) where it has one;
* ELBO and log p(x): the test ELBO and the importance-sampled (IWAE, k draws) estimate of
  log p(x), nats per image, from ``vaebench.metrics.likelihood_report``, for models that
  define a likelihood ("-" for the others: deterministic autoencoders, MS-SSIM VAE, ...);
* s/epoch: mean wall-clock training seconds per epoch.

Vector-quantized models (names starting with "vq", "hrq" or "fsq") are skipped unless
named in --models: they need spatial networks. Models that need labels (cvae) train with
the labels; a metric that a model cannot give is shown as "-".

    python benchmarks/model_zoo.py [--epochs 10] [--threads 1] [--models vae,wae,...]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import traceback
from typing import Any

import torch

from vaebench import Trainer, TrainerConfig, create_model, list_models
from vaebench.data import ArrayData, load_dataset
from vaebench.metrics import reconstruction_mse
from vaebench.training import evaluate

#: The quantized family (benchmarks/vq_family.py) and the sparse autoencoder for tables.
SKIP_PREFIXES = ("vq", "hrq", "fsq", "lfq", "gumbel", "topk")


def likelihood_figures(model: Any, test: ArrayData, k: int) -> tuple[float, float]:
    """(ELBO, log p(x) estimate) in nats per image, or NaNs where undefined."""
    try:
        from vaebench.metrics import likelihood_report
    except ImportError:
        return math.nan, math.nan
    try:
        report = likelihood_report(model, test, k=k, seed=0)
    except (TypeError, NotImplementedError, ValueError, RuntimeError):
        return math.nan, math.nan
    return report["elbo"], report["log_likelihood"]


def run_model(name: str, train: ArrayData, test: ArrayData, args: argparse.Namespace
              ) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    options: dict[str, Any] = {"likelihood": args.likelihood}
    if args.likelihood in ("gaussian", "laplace"):
        try:
            options["sigma"] = float(args.sigma)
        except ValueError:
            options["sigma"] = args.sigma  # "learned", "optimal", "data"
    model = create_model(name, input_dim=train.sample_shape, latent_dim=args.latent_dim,
                         **options)
    trainer = Trainer(model, TrainerConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
        device=args.device, progress=False, keep_best=False))
    start = time.perf_counter()
    history = trainer.fit(train)
    total = time.perf_counter() - start
    model.eval()
    row: dict[str, Any] = {"model": name, "seconds_per_epoch":
                           statistics.mean(r["seconds"] for r in history),
                           "train_seconds": total}
    torch.manual_seed(args.seed)
    terms = evaluate(model, test)
    row["kl"] = terms.get("kl", math.nan)
    try:
        row["mse"] = reconstruction_mse(model, test)
    except (TypeError, ValueError, RuntimeError):  # e.g. a model that needs labels
        row["mse"] = math.nan
    row["elbo"], row["log_px"] = likelihood_figures(model, test, args.k)
    return row


def _fmt(value: float, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=None,
                        help="comma-separated names (default: every registered model but VQ)")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--likelihood", default="bernoulli")
    parser.add_argument("--sigma", default="1.0", help="decoder scale (Gaussian likelihood)")
    parser.add_argument("--k", type=int, default=100, help="importance draws for log p(x)")
    parser.add_argument("--train-size", type=int, default=None, help="first N train images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    else:
        names = [n for n in list_models() if not n.startswith(SKIP_PREFIXES)]
        names = sorted(set(names) | {"ae", "vae"})
    x, labels = load_dataset("mnist5k", "train")
    if args.train_size is not None:
        x, labels = x[:args.train_size], labels[:args.train_size]
    train = ArrayData(x, labels, "mnist5k train")
    test = ArrayData(*load_dataset("mnist5k", "test"), "mnist5k test")

    print(f"mnist5k: {len(train)} train / {len(test)} test images; MLP networks; "
          f"latent {args.latent_dim}; {args.likelihood} likelihood; {args.epochs} epochs; "
          f"batch {args.batch_size}; lr {args.lr}; seed {args.seed}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.device}\n")
    header = ["model", "recon MSE/pixel", "KL (nats)", "ELBO (nats)",
              f"log p(x) (IWAE k={args.k})", "s/epoch"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for name in names:
        try:
            row = run_model(name, train, test, args)
        except Exception as err:  # one broken model must not hide the others
            traceback.print_exc()
            print(f"| {name} | failed: {type(err).__name__}: {err} | | | | |", flush=True)
            continue
        cells = [name, _fmt(row["mse"], 4), _fmt(row["kl"], 2), _fmt(row["elbo"], 2),
                 _fmt(row["log_px"], 2), _fmt(row["seconds_per_epoch"], 2)]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
