"""How often RHVAE training hits a non-finite loss: pythae 0.1.2 against vaebench.

Both train on binarized MNIST (a subset), with pythae's RHVAE defaults (n_lf=3, eps_lf=1e-3,
beta_zero=0.3, temperature=1.5, regularization=0.01, latent_dim=10, its default MLPs) unless
overridden, Adam at ``--lr``, batch 64, over several seeds; after every epoch pythae's
``update()`` builds its metric from the stored centroids and the test set is scored in eval
mode, as pythae's trainer does. A seed fails at its first non-finite loss or linear-algebra
error; the script prints the share of failing seeds of each library, and each failure.

Run with ``/work/pythae-venv/bin/python benchmarks/rhvae_nan.py`` (pythae must be importable).
"""

from __future__ import annotations

import argparse
import math

import torch

from vaebench.data import load_dataset


def binarized_mnist(n_train: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n images of MNIST's splits, binarized once with a fixed seed."""
    generator = torch.Generator().manual_seed(0)
    train = load_dataset("mnist", "train")[0][:n_train]
    test = load_dataset("mnist", "test")[0][:n_test]
    return (torch.bernoulli(train, generator=generator),
            torch.bernoulli(test, generator=generator))


def pythae_model(args: argparse.Namespace) -> torch.nn.Module:
    from pythae.models import RHVAE, RHVAEConfig

    return RHVAE(RHVAEConfig(input_dim=(1, 28, 28), latent_dim=args.latent_dim,
                             reconstruction_loss="bce", n_lf=args.n_lf, eps_lf=args.eps_lf))


def vaebench_model(args: argparse.Namespace) -> torch.nn.Module:
    from vaebench import create_model

    return create_model("rhvae", input_dim=(1, 28, 28), latent_dim=args.latent_dim,
                        likelihood="bernoulli", n_lf=args.n_lf, eps_lf=args.eps_lf)


def pythae_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model({"data": x}).loss


def vaebench_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).loss


LIBRARIES = {"pythae": (pythae_model, pythae_loss), "vaebench": (vaebench_model, vaebench_loss)}


def first_failure(library: str, seed: int, data: tuple[torch.Tensor, torch.Tensor],
                  args: argparse.Namespace) -> str | None:
    """Train one seed; where and why it first failed, or None."""
    build, loss_of = LIBRARIES[library]
    torch.manual_seed(seed)
    model = build(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    train, test = data
    for epoch in range(args.epochs):
        model.train()
        for step, batch in enumerate(train[torch.randperm(len(train))].split(64)):
            loss, why = checked_loss(loss_of, model, batch, f"epoch {epoch} step {step}")
            if why:
                return why
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if library == "pythae":
            model.update()
        model.eval()
        for batch in test.split(64):
            _, why = checked_loss(loss_of, model, batch, f"epoch {epoch} eval")
            if why:
                return why
    return None


def checked_loss(loss_of, model, batch, where: str):
    """(loss, None), or (None, why) when computing it failed or gave a non-finite value."""
    try:
        loss = loss_of(model, batch)
    except (RuntimeError, ValueError) as err:  # a NaN reaching torch.distributions
        return None, f"{where}: {str(err).splitlines()[0][:90]}"
    if not math.isfinite(loss.item()):
        return None, f"{where}: loss {loss.item()}"
    return loss, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--n-lf", type=int, default=3)
    parser.add_argument("--eps-lf", type=float, default=1e-3)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = binarized_mnist(args.n_train, args.n_test)
    print(f"settings: {vars(args)}", flush=True)
    for library in args.libraries:
        failed = 0
        for seed in range(args.seeds):
            why = first_failure(library, seed, data, args)
            failed += why is not None
            print(f"  {library} seed {seed}: {why or 'every loss finite'}", flush=True)
        print(f"{library}: {failed}/{args.seeds} seeds non-finite or failed", flush=True)


if __name__ == "__main__":
    main()
