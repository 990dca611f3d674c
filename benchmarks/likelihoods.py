"""Train the same VAE on mnist5k with each reconstruction likelihood and compare them.

For every choice (the same MLP VAE, latent 16, seed and epochs) it reports, on the 1,000
test images: reconstruction MSE per pixel, KL(q(z|x) || p(z)), the ELBO and the
importance-sampled log p(x) (IWAE bound, K = 100) in nats and bits per dimension, and it
draws a grid of samples per choice. Writes

* ``docs/figures/likelihood_samples.png``: 16 samples (means of p(x|z), z ~ N(0, I)) per choice
* ``docs/figures/likelihood_table.md``: the markdown table
* ``docs/figures/likelihood_results.json``: the raw figures and settings
* the table into ``docs/likelihoods.md`` between its ``likelihood-table`` markers.

Usage::

    python benchmarks/likelihoods.py             # the full run (about 10-15 min, 1 thread)
    python benchmarks/likelihoods.py --quick     # a smoke test: 2 epochs, 500 images
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time
from pathlib import Path

import torch

from vaebench import VAE, Trainer, TrainerConfig
from vaebench.data import as_data, load_dataset
from vaebench.metrics import likelihood_report, reconstruction_mse
from vaebench.training import evaluate

ROOT = Path(__file__).resolve().parent.parent

#: (label, likelihood, sigma): the choices compared, in table order.
CHOICES = [
    ("gaussian, sigma=1", "gaussian", 1.0),
    ("gaussian, sigma=0.3", "gaussian", 0.3),
    ("gaussian, sigma=0.1", "gaussian", 0.1),
    ("gaussian, sigma=learned", "gaussian", "learned"),
    ("gaussian, sigma=optimal", "gaussian", "optimal"),
    ("gaussian, sigma=data", "gaussian", "data"),
    ("laplace, scale=learned", "laplace", "learned"),
    ("bernoulli", "bernoulli", 1.0),
    ("continuous_bernoulli", "continuous_bernoulli", 1.0),
    ("discretized_logistic", "discretized_logistic", 1.0),
]

#: What kind of object each likelihood's log p(x) is on this data.
KIND = {
    "gaussian": "density on R^D",
    "laplace": "density on R^D",
    "continuous_bernoulli": "density on [0,1]^D",
    "bernoulli": "not a density (x not binary)",
    "discretized_logistic": "probability of 256 levels",
}


def final_sigma(model: VAE) -> str:
    """The scale in use after training (mean over pixels for a per-pixel scale)."""
    lik = model.likelihood
    if not hasattr(lik, "sigma"):
        return "-"
    return f"{float(lik.sigma.float().mean()):.3g}"


def run_choice(label, likelihood, sigma, train, test, args) -> dict:
    torch.manual_seed(args.seed)
    model = VAE(input_dim=train.sample_shape, latent_dim=args.latent_dim,
                likelihood=likelihood, sigma=sigma)
    trainer = Trainer(model, TrainerConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
        device="cpu", progress=False))
    start = time.perf_counter()
    trainer.fit(train)
    train_seconds = time.perf_counter() - start
    model.eval()
    start = time.perf_counter()
    terms = evaluate(model, test)
    report = likelihood_report(model, test, k=args.k, seed=args.seed)
    eval_seconds = time.perf_counter() - start
    torch.manual_seed(args.seed)
    samples = model.generate(16)
    return {
        "label": label,
        "likelihood": likelihood,
        "sigma": sigma,
        "final_sigma": final_sigma(model),
        "kind": KIND[likelihood],
        "mse_per_pixel": reconstruction_mse(model, test),
        "kl": terms["kl"],
        "recon_nll": terms["recon"],
        "elbo": report["elbo"],
        "elbo_std_error": report["elbo_std_error"],
        "log_likelihood": report["log_likelihood"],
        "log_likelihood_std_error": report["log_likelihood_std_error"],
        "nll_bits_per_dim": report["nll_bits_per_dim"],
        "neg_elbo_bits_per_dim": report["neg_elbo_bits_per_dim"],
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "samples": samples,
    }


def markdown_table(rows: list[dict], k: int) -> str:
    head = ("| likelihood | sigma after training | test MSE / pixel | test KL (nats) "
            f"| test ELBO (nats) | log p(x), K={k} (nats) | NLL (bits/dim) | what log p(x) is |")
    lines = [head, "|" + " --- |" * 8]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['final_sigma']} | {r['mse_per_pixel']:.4f} | {r['kl']:.1f} "
            f"| {r['elbo']:.1f} | {r['log_likelihood']:.1f} ± {r['log_likelihood_std_error']:.1f}"
            f" | {r['nll_bits_per_dim']:.3f} | {r['kind']} |")
    return "\n".join(lines) + "\n"


def save_figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vaebench.viz import image_grid

    ncol = 5
    nrow = math.ceil(len(rows) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol, 2.9 * nrow))
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows, strict=False):
        ax.imshow(image_grid(r["samples"], ncol=4, pad=1), cmap="gray", vmin=0, vmax=255)
        ax.set_title(r["label"].replace(", ", "\n"), fontsize=9)
    fig.suptitle("Samples (means of p(x|z), z ~ N(0, I)) of the same VAE on mnist5k",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_into_docs(table: str, settings: str, doc: Path) -> bool:
    """Replace the text between the likelihood-table markers of the docs page."""
    if not doc.is_file():
        return False
    text = doc.read_text()
    pattern = re.compile(r"(<!-- likelihood-table:start -->\n).*?(<!-- likelihood-table:end -->)",
                         re.S)
    if not pattern.search(text):
        return False
    block = f"{settings}\n\n{table}"
    doc.write_text(pattern.sub(lambda m: m.group(1) + block + m.group(2), text))
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--k", type=int, default=100, help="importance draws for log p(x)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 epochs on 500 images, K=10, nothing written to docs")
    parser.add_argument("--output", default=str(ROOT / "docs" / "figures"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train_x, _ = load_dataset("mnist5k", "train")
    test_x, _ = load_dataset("mnist5k", "test")
    if args.quick:
        args.epochs, args.k = 2, 10
        train_x, test_x = train_x[:500], test_x[:200]
        args.output = str(Path(args.output) / "quick")
    train = as_data(train_x, name="train data")
    test = as_data(test_x, name="test data")
    settings = (f"Settings: mnist5k ({len(train)} train / {len(test)} test images, 1 x 28 x 28), "
                f"VAE with the default MLP encoder and decoder (hidden 512, 256), "
                f"latent_dim={args.latent_dim}, Adam lr={args.lr}, batch {args.batch_size}, "
                f"{args.epochs} epochs, seed {args.seed}, K={args.k} importance draws, "
                f"{args.threads} CPU thread(s), torch {torch.__version__}, "
                f"{platform.machine()} ({platform.processor() or 'cpu'}).")
    print(settings, flush=True)

    rows = []
    total = time.perf_counter()
    for label, likelihood, sigma in CHOICES:
        row = run_choice(label, likelihood, sigma, train, test, args)
        rows.append(row)
        print(f"{label:28s} sigma {row['final_sigma']:>6s}  MSE {row['mse_per_pixel']:.4f}  "
              f"KL {row['kl']:6.1f}  ELBO {row['elbo']:9.1f}  log p(x) {row['log_likelihood']:9.1f}"
              f"  {row['nll_bits_per_dim']:6.3f} bits/dim  ({row['train_seconds']:.0f} s train, "
              f"{row['eval_seconds']:.0f} s eval)", flush=True)
    print(f"total {time.perf_counter() - total:.0f} s")

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, args.k)
    print("\n" + table)
    (out / "likelihood_table.md").write_text(settings + "\n\n" + table)
    save_figure(rows, out / "likelihood_samples.png")
    results = {"settings": vars(args), "description": settings,
               "rows": [{k: v for k, v in r.items() if k != "samples"} for r in rows]}
    (out / "likelihood_results.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.quick and write_into_docs(table, settings, ROOT / "docs" / "likelihoods.md"):
        print("table written into docs/likelihoods.md")
    print(f"figure and table in {out}")


if __name__ == "__main__":
    main()
