"""Which likelihood should ``vaebench train`` use by default? Measure the candidates.

    python benchmarks/likelihood_defaults.py --datasets mnist5k,digits --seeds 0,1,2
    python benchmarks/likelihood_defaults.py --datasets dsprites --seeds 0

Trains the CLI's default model (VAE, latent 16, default MLP networks, Adam 1e-3, batch 64,
10 epochs, best eval epoch kept, 1 thread) once per candidate likelihood and seed on each
dataset, with the splits of ``vaebench.data.load_train_test`` (drawn with the first seed),
and reports on the test split (mean ± sd over seeds when there are several): the negative
ELBO in nats, the KL term, the reconstruction MSE per pixel, the scale after training, and
FID / precision / recall of 1000 prior draws against the test images (features of the
dataset's small classifier, ``ClassifierFeatures.for_dataset``), plus seconds per epoch.
Prints one markdown table per dataset and optionally writes every figure as JSON (--json).

Negative ELBOs are comparable only between likelihoods of the same kind (the "nats are"
column): densities with each other, never with a Bernoulli on non-binary data (no density).

    python benchmarks/likelihood_defaults.py --epochs 1 --n-samples 200  # a timing check
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.data import load_train_test
from vaebench.metrics import ClassifierFeatures, reconstruction_error, sample_quality
from vaebench.training import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from likelihoods import CHOICES as ALL_CHOICES  # noqa: E402 (the sibling benchmark's list)

#: (label, likelihood, sigma): the candidates for a default, in table order: every choice of
#: benchmarks/likelihoods.py but the fixed small sigmas (no default for unknown data) and
#: the discretized logistic (8-bit data only).
CHOICES = [choice for choice in ALL_CHOICES
           if choice[2] not in (0.3, 0.1) and choice[1] != "discretized_logistic"]


def nats_are(likelihood: str, binary: bool) -> str:
    """What the likelihood's nats measure on this data."""
    if likelihood == "bernoulli":
        return "probability (binary data)" if binary else "no density (x not binary)"
    if likelihood == "continuous_bernoulli":
        return "density on [0,1]^D"
    return "density on R^D"


def final_scale(model) -> str:
    """The scale in use after training, or '-' for likelihoods without one."""
    scale = getattr(model.likelihood, "sigma", None)
    if scale is None:
        return "-"
    return f"{float(torch.as_tensor(scale).float().mean()):.3g}"


def run_one(choice, seed, train, test, features, args) -> dict:
    """Train one candidate with one seed as ``vaebench train`` would and measure it."""
    label, likelihood, sigma = choice
    torch.manual_seed(seed)
    model = create_model("vae", input_dim=train.sample_shape, latent_dim=args.latent_dim,
                         likelihood=likelihood, sigma=sigma)
    trainer = Trainer(model, TrainerConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        seed=seed, device="cpu", progress=False))
    history = trainer.fit(train, test)
    model.eval()
    terms = evaluate(model, test)
    start = time.perf_counter()
    quality = sample_quality(model, test, features, n=args.n_samples, seed=seed)
    return {
        "label": label, "likelihood": likelihood, "sigma": sigma, "seed": seed,
        "scale_after": final_scale(model), "nats_are": nats_are(likelihood, args.binary),
        "neg_elbo": terms["loss"], "kl": terms["kl"],
        "mse": reconstruction_error(model, test)["mse"],
        "fid": quality["fid"], "precision": quality["precision"], "recall": quality["recall"],
        "seconds_per_epoch": statistics.median(r["seconds"] for r in history),
        "best_epoch": trainer.best_epoch, "quality_seconds": time.perf_counter() - start,
    }


#: The measured figures: (key, format) in table order after the first columns.
FIGURES = [("neg_elbo", ".1f"), ("kl", ".1f"), ("mse", ".4f"), ("fid", ".1f"),
           ("precision", ".3f"), ("recall", ".3f"), ("seconds_per_epoch", ".2f")]


def summarize(runs: list[dict]) -> dict:
    """One row from a candidate's runs (one per seed): mean and sd of every figure."""
    row = {k: runs[0][k] for k in ("label", "likelihood", "sigma", "nats_are")}
    row["scale_after"] = "/".join(dict.fromkeys(r["scale_after"] for r in runs))
    for key, _ in FIGURES:
        values = [r[key] for r in runs]
        row[key] = statistics.mean(values)
        row[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else None
    return row


def cell(row: dict, key: str, fmt: str) -> str:
    """A figure, with ``± sd`` over seeds when there are several."""
    text = format(row[key], fmt)
    sd = row.get(key + "_sd")
    return text if sd is None or key == "seconds_per_epoch" else f"{text} ± {sd:{fmt}}"


def table(rows: list[dict], n: int) -> str:
    """One markdown table of a dataset's rows."""
    head = ("| likelihood | scale after | -ELBO (nats) | nats are | KL (nats) | MSE / pixel "
            f"| FID ({n} prior draws) | precision | recall | s / epoch |")
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        cells = {key: cell(r, key, fmt) for key, fmt in FIGURES}
        lines.append(
            f"| {r['label']} | {r['scale_after']} | {cells['neg_elbo']} | {r['nats_are']} "
            f"| {cells['kl']} | {cells['mse']} | {cells['fid']} | {cells['precision']} "
            f"| {cells['recall']} | {cells['seconds_per_epoch']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="mnist5k,digits")
    parser.add_argument("--dsprites-train-size", type=int, default=None,
                        help="generated dsprites training images (default: the CLI's, 20000; "
                             "test: max(1000, N/4))")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--n-samples", type=int, default=1000, help="prior draws for FID")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (mean ± sd)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--choices", default=None,
                        help="a subset as likelihood:sigma, e.g. gaussian:optimal,bernoulli:1.0")
    parser.add_argument("--json", default=None, help="write every figure to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    choices = CHOICES
    if args.choices:
        wanted = set(args.choices.split(","))
        choices = [c for c in CHOICES if f"{c[1]}:{c[2]}" in wanted]

    started = time.perf_counter()
    results = {"settings": vars(args) | {"torch": torch.__version__,
                                         "machine": platform.machine()}, "datasets": {}}
    for name in args.datasets.split(","):
        size = args.dsprites_train_size if name == "dsprites" else None
        train, test = load_train_test(name, train_size=size, seed=seeds[0])
        x = train.take(slice(0, len(train)))
        args.binary = bool(((x == 0) | (x == 1)).all())  # Bernoulli is exact only then
        start = time.perf_counter()
        features = ClassifierFeatures.for_dataset(name)
        print(f"\n## {name}: {len(train)} train / {len(test)} test, shape "
              f"{tuple(train.sample_shape)}, binary {args.binary}; classifier "
              f"{'cached' if features.loaded_from_cache else 'trained'} "
              f"({time.perf_counter() - start:.0f} s, test accuracy "
              f"{features.test_accuracy:.3f})", flush=True)
        rows, runs = [], []
        for choice in choices:
            done = []
            for seed in seeds:
                run = run_one(choice, seed, train, test, features, args)
                done.append(run)
                print(f"{run['label']:26s} seed {seed}  -ELBO {run['neg_elbo']:9.1f}  MSE "
                      f"{run['mse']:.4f}  FID {run['fid']:7.2f}  P {run['precision']:.3f}  R "
                      f"{run['recall']:.3f}  {run['seconds_per_epoch']:.2f} s/epoch", flush=True)
            runs += done
            rows.append(summarize(done))
        print("\n" + table(rows, args.n_samples), flush=True)
        results["datasets"][name] = {"n_train": len(train), "n_test": len(test),
                                     "binary": args.binary,
                                     "classifier_accuracy": features.test_accuracy,
                                     "rows": rows, "runs": runs}
    total = time.perf_counter() - started
    results["total_seconds"] = total
    print(f"\ntotal {total:.0f} s, {args.threads} thread(s), torch {torch.__version__}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
