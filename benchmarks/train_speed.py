"""Time training epochs of the library's VAE, with each fast path the device allows,
against a plain PyTorch loop and pythae's VAE.

All train the same networks (MLP and conv) on the same data (mnist5k, 4,000 images) with
the same batch size and optimizer; the plain loop is the shortest correct fp32 VAE step
written by hand. The library runs once per option the device allows: fp32, bf16 and fp16
(where they are not refused: CUDA, or bf16 on a CPU with native bfloat16), compile
(inductor) and channels-last (conv networks). Prints seconds per epoch (median over
repeats, the first epoch of each run left out: warm-up and compiling) and the ratio of each
to the plain loop and to pythae (below 1: faster). pythae is timed when it is installed:
run the script with pythae's environment (see ``pythae_side_by_side.py``) to get all in
one run.

    python benchmarks/train_speed.py [--threads 1] [--epochs 3] [--batch-size 64]
        [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.data import load_dataset
from vaebench.training.fast_paths import precision_refusal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pythae_runs import run_pythae_pipeline  # noqa: E402

OPTIONS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "compile": {"compile": True},
    "channels-last": {"channels_last": True},
}


def available_options(device: torch.device, nets: str) -> dict[str, dict]:
    """The fast paths worth timing on ``device`` with ``nets`` networks."""
    options = {}
    for name, fields in OPTIONS.items():
        refusal = precision_refusal(fields.get("precision", "fp32"), device)
        if refusal is not None:
            print(f"  {nets} {name}: not timed, refused: {refusal.split(':')[0]}")
        elif name != "channels-last" or nets == "conv":
            options[name] = fields
    return options


def new_model(nets: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vae", input_dim=(1, 28, 28), latent_dim=16, encoder=nets,
                        decoder=nets)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_epoch(encoder, decoder, optimizer, x, batch_size, generator):
    """One epoch of a hand-written VAE step (Gaussian decoder, unit variance)."""
    const = 0.5 * x[0].numel() * math.log(2 * math.pi)
    order = torch.randperm(len(x), generator=generator).to(x.device)
    for start in range(0, len(x), batch_size):
        batch = x[order[start:start + batch_size]]
        mean, log_var = encoder(batch).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        recon = decoder(z)
        nll = 0.5 * ((batch - recon) ** 2).flatten(1).sum(1) + const
        kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(1)
        loss = (nll + kl).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def time_library(nets, x, epochs, batch_size, device, **options):
    """Seconds of each epoch after the first."""
    config = TrainerConfig(epochs=epochs, batch_size=batch_size, progress=False,
                           keep_best=False, device=str(device), **options)
    history = Trainer(new_model(nets), config).fit(x)
    return [r["seconds"] for r in history[1:]]


def time_plain(nets, x, epochs, batch_size, device):
    """Seconds of each epoch after the first."""
    model = new_model(nets).to(device)
    x = x.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        plain_epoch(model.encoder, model.decoder, optimizer, x, batch_size, generator)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def time_pythae(nets, x, epochs, batch_size, device):
    """pythae's VAE wrapped around the same networks, its own trainer loop (whole pipeline
    time divided by the epochs, so its set-up is included); None if pythae is missing."""
    try:
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainerConfig
    except ImportError:
        return None
    model = new_model(nets)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = model.encoder

        def forward(self, inputs):
            mean, log_var = self.net(inputs).chunk(2, dim=1)
            return ModelOutput(embedding=mean, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = model.decoder

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    config = VAEConfig(input_dim=tuple(x.shape[1:]), latent_dim=model.config.latent_dim)
    pythae_model = VAE(config, encoder=Encoder(), decoder=Decoder())
    _, seconds = run_pythae_pipeline(pythae_model, BaseTrainerConfig, x.numpy(), None, epochs,
                                     seed=0, device=device.type, batch_size=batch_size)
    return seconds


def ratio(seconds: float, reference: float | None) -> str:
    return "-" if reference is None else f"{seconds / reference:.2f}"


def time_networks(nets: str, x: torch.Tensor, args: argparse.Namespace) -> None:
    """Print one row per option for ``nets``, then the references."""
    device = torch.device(args.device)
    options = available_options(device, nets)
    library = {name: [] for name in options}
    plain = []
    for _ in range(args.repeats):  # interleave so drifts hit all alike
        plain += time_plain(nets, x, args.epochs, args.batch_size, device)
        for name, fields in options.items():
            library[name] += time_library(nets, x, args.epochs, args.batch_size, device,
                                          **fields)
    plain_s = statistics.median(plain)
    pythae_s = time_pythae(nets, x, args.epochs, args.batch_size, device)
    for name, seconds in library.items():
        median = statistics.median(seconds)
        print(f"{nets:8s} {'vaebench ' + name:24s} {median:9.3f} {ratio(median, plain_s):>9s}"
              f" {ratio(median, pythae_s):>10s}")
    print(f"{nets:8s} {'plain PyTorch loop, fp32':24s} {plain_s:9.3f} {'1.00':>9s}"
          f" {ratio(plain_s, pythae_s):>10s}")
    pythae_text = "not installed" if pythae_s is None else f"{pythae_s:.3f}"
    print(f"{nets:8s} {'pythae VAE, fp32':24s} {pythae_text:>9s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is not timed")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")
    torch.set_num_threads(args.threads)
    x, _ = load_dataset("mnist5k", "train")
    print(f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, "
          f"{len(x)} images, batch {args.batch_size}, {args.epochs} epochs x {args.repeats}")
    print(f"{'networks':8s} {'run':24s} {'s/epoch':>9s} {'vs plain':>9s} {'vs pythae':>10s}")
    for nets in ("mlp", "conv"):
        time_networks(nets, x, args)


if __name__ == "__main__":
    main()
