"""pythae models converted by ``vaebench.from_pythae``, checked against pythae itself.

For every pythae model that converts: build it in pythae with its default networks (MNIST
shape, latent 16), train it a few Adam steps on the first images of vaebench's bundled
``mnist5k`` (so that its weights are no longer their initial values), save it with pythae's
``model.save()``, convert the folder and write it as a vaebench model folder, load that
folder, and compare on 256 test images:

- the encoder's outputs (mean and log-variance, the code, or direction and concentration);
- the decoder's output at the same 256 codes (pythae's reconstruction, vaebench's mean of
  p(x | z));
- reconstructions: the decoder at the posterior mean;
- the loss: pythae's ``model(x).loss`` against vaebench's ``model(x).loss`` after the same
  seed, where both draw the same noise in the same order; vaebench's loss then exceeds
  pythae's by a known offset: the Gaussian likelihood's constant D (log sigma + log(2 pi)/2),
  which pythae leaves out, plus any term pythae leaves out of its loss (RAE-L2's decoder
  penalty, which pythae applies as weight decay). For SVAE, whose von Mises-Fisher samplers
  differ, vaebench's loss is computed at pythae's draw z. The importance-weighted models
  have no row: pythae reports a gradient surrogate, not the bound, from draws laid out
  otherwise.

Run it in the environment that has pythae (and vaebench installed beside it)::

    /work/pythae-venv/bin/python benchmarks/pythae_convert.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import torch

from vaebench import from_pythae, load_model, save_model
from vaebench.data import as_data, load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pythae_runs import compare_all  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LATENT = 16


class Case(NamedTuple):
    """One pythae model to convert."""

    pythae: str
    fields: dict
    #: How the losses compare: "same noise", "at pythae's z", or None (no comparison).
    loss: str | None = "same noise"
    #: vaebench terms that pythae leaves out of its loss.
    extra_terms: tuple[str, ...] = ()
    #: Keyword arguments of pythae's forward (its epoch counter, its dataset size).
    forward: dict = {}


CASES = {
    "VAE (mse)": Case("VAE", {"reconstruction_loss": "mse"}),
    "VAE (bce)": Case("VAE", {"reconstruction_loss": "bce"}),
    "BetaVAE": Case("BetaVAE", {"beta": 4.0}),
    "DisentangledBetaVAE": Case("DisentangledBetaVAE", {"beta": 5.0, "C": 10.0,
                                                        "warmup_epoch": 2},
                                forward={"epoch": 10**6}),
    "BetaTCVAE": Case("BetaTCVAE", {"beta": 6.0}),
    "IWAE": Case("IWAE", {"number_samples": 5}, loss=None),
    "MIWAE": Case("MIWAE", {"number_samples": 5, "number_gradient_estimates": 2}, loss=None),
    "PIWAE": Case("PIWAE", {"number_samples": 5, "number_gradient_estimates": 2}, loss=None),
    "CIWAE": Case("CIWAE", {"number_samples": 5, "beta": 0.5}, loss=None),
    "SVAE": Case("SVAE", {}, loss="at pythae's z"),
    "VAMP": Case("VAMP", {"number_components": 20}, forward={"epoch": 10**6}),
    "INFOVAE_MMD": Case("INFOVAE_MMD", {"alpha": 0.0, "lbd": 10.0}),
    "AE": Case("AE", {}),
    "WAE_MMD": Case("WAE_MMD", {"reg_weight": 3.0}),
    "RAE_L2": Case("RAE_L2", {"embedding_weight": 1e-2, "reg_weight": 1e-3},
                   extra_terms=("decoder_l2",)),
}


def pythae_model(case: Case) -> Any:
    import pythae.models as pm

    config_cls = getattr(pm, f"{case.pythae}Config", None) or getattr(pm, f"{case.pythae}_Config")
    config = config_cls(input_dim=(1, 28, 28), latent_dim=LATENT, **case.fields)
    return getattr(pm, case.pythae)(config)


def pythae_loss(model: Any, x: torch.Tensor, case: Case, dataset_size: int) -> Any:
    from pythae.data.datasets import DatasetOutput

    options = {**case.forward, "dataset_size": dataset_size}
    with contextlib.redirect_stdout(io.StringIO()):  # pythae prints from some forwards
        return model(DatasetOutput(data=x), **options)


def train_in_pythae(model: Any, x: torch.Tensor, case: Case, steps: int) -> None:
    """A few Adam steps on pythae's own loss, batches of 64."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        batch = x[(step * 64) % len(x):][:64]
        optimizer.zero_grad()
        pythae_loss(model, batch, case, len(x)).loss.backward()
        optimizer.step()
    model.eval()


def encoder_outputs(theirs: Any, x: torch.Tensor) -> torch.Tensor:
    """pythae's encoder heads, concatenated as vaebench's encoder outputs them."""
    out = theirs.encoder(x)
    heads = [name for name in ("embedding", "log_covariance", "log_concentration")
             if name in out]
    return torch.cat([out[name] for name in heads], dim=1)


def pythae_posterior_mean(theirs: Any, x: torch.Tensor, case: Case) -> torch.Tensor:
    """The code pythae's posterior is centred on (SVAE: the normalized direction; pythae's
    ``predict`` decodes the unnormalized embedding)."""
    code = theirs.encoder(x).embedding
    return torch.nn.functional.normalize(code, dim=1) if case.pythae == "SVAE" else code


def likelihood_constant(model: Any) -> float:
    """What vaebench's likelihood adds to pythae's term: D (log sigma + log(2 pi) / 2)."""
    if model.config.likelihood != "gaussian":
        return 0.0
    dim = math.prod(model.config.input_dim)
    return dim * (math.log(model.config.sigma) + 0.5 * math.log(2 * math.pi))


def loss_difference(ours: Any, theirs: Any, x: torch.Tensor, case: Case,
                    dataset_size: int) -> dict[str, float]:
    """pythae's loss, vaebench's, the offset expected between them, and what is left."""
    torch.manual_seed(1)
    their_output = pythae_loss(theirs, x, case, dataset_size)
    if case.loss == "at pythae's z":
        z = their_output.z
        recon = ours.likelihood.nll(ours.decode(z), x)
        our_loss = float((recon + ours.encode(x).kl_uniform()).mean())
        extra = 0.0
    else:
        torch.manual_seed(1)
        output = ours(x)
        our_loss = float(output.loss)
        weights = ours.term_weights()
        extra = sum(weights.get(t, 1.0) * float(output.terms[t].mean()) for t in case.extra_terms)
    offset = likelihood_constant(ours) + extra
    their_loss = float(their_output.loss)
    return {"pythae_loss": their_loss, "vaebench_loss": our_loss, "expected_offset": offset,
            "residual": our_loss - their_loss - offset}


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def compare(label: str, case: Case, x_train: torch.Tensor, x_test: torch.Tensor,
            steps: int, folder: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    theirs = pythae_model(case)
    train_in_pythae(theirs, x_train, case, steps)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs.save(str(folder / "pythae"))
    save_model(from_pythae(folder / "pythae"), folder / "vaebench")
    ours = load_model(folder / "vaebench")
    if case.pythae == "BetaTCVAE":
        ours.prepare(as_data(x_train))  # N, which pythae's trainer passes to its forward
    z = torch.randn(len(x_test), LATENT)
    if case.pythae == "SVAE":
        z = torch.nn.functional.normalize(z, dim=1)
    with torch.no_grad():
        row = {
            "model": label, "vaebench": ours.name, "likelihood": ours.config.likelihood,
            "sigma": ours.config.sigma,
            "encoder": max_difference(encoder_outputs(theirs, x_test), ours.encoder(x_test)),
            "decoder": max_difference(theirs.decoder(z).reconstruction,
                                      ours.likelihood.mean(ours.decode(z))),
            "reconstruction": max_difference(
                theirs.decoder(pythae_posterior_mean(theirs, x_test, case)).reconstruction,
                ours.reconstruct(x_test)),
        }
    if case.loss is not None:
        with torch.no_grad():
            row.update(loss_difference(ours, theirs, x_test, case, len(x_train)))
    return row


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"pythae default networks, input 1 x 28 x 28, latent {LATENT}, {args.steps} Adam "
        f"steps in pythae on mnist5k, compared on {args.test_images} test images; torch "
        f"{torch.__version__}. Max |difference| of encoder outputs, decoder outputs at the "
        "same codes and reconstructions; losses in nats per sample.",
        "",
        "| pythae model | vaebench | likelihood | encoder | decoder | reconstruction | "
        "pythae loss | vaebench loss | expected offset | residual |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        likelihood = row["likelihood"] + (f" (sigma {row['sigma']:.4g})"
                                          if row["likelihood"] == "gaussian" else "")
        loss = (f"{row['pythae_loss']:.4f} | {row['vaebench_loss']:.4f} | "
                f"{row['expected_offset']:.4f} | {row['residual']:.1e}"
                if "residual" in row else "- | - | - | -")
        lines.append(f"| {row['model']} | {row['vaebench']} | {likelihood} | "
                     f"{row['encoder']:.1e} | {row['decoder']:.1e} | "
                     f"{row['reconstruction']:.1e} | {loss} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CASES),
                        help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--steps", type=int, default=20, help="Adam steps in pythae")
    parser.add_argument("--test-images", type=int, default=256)
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "pythae_convert"),
                        help="results path without suffix (.json and .md are written)")
    args = parser.parse_args()
    x_train, _ = load_dataset("mnist5k", "train")
    x_test, _ = load_dataset("mnist5k", "test")
    x_train, x_test = x_train[:64 * args.steps], x_test[:args.test_images]
    def compare_in_a_folder(label: str) -> dict:
        with tempfile.TemporaryDirectory() as folder:
            return compare(label, CASES[label], x_train, x_test, args.steps, Path(folder))

    compare_all(args, compare_in_a_folder, lambda rows: markdown(rows, args))


if __name__ == "__main__":
    main()
