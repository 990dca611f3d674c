"""Time training epochs of the library's VAE against a plain PyTorch loop.

Both train the same networks (MLP and conv) on the same data (mnist5k, 4,000 images) with
the same batch size and optimizer; the plain loop is the shortest correct VAE step written
by hand. Prints seconds per epoch (median over repeats) and the library's overhead. If
pythae is installed, its VAE with the same networks is timed too.

    python benchmarks/train_speed.py [--threads 1] [--epochs 3] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import time

import torch

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.data import load_dataset


def plain_epoch(encoder, decoder, optimizer, x, batch_size, generator):
    """One epoch of a hand-written VAE step (Gaussian decoder, unit variance)."""
    const = 0.5 * x[0].numel() * math.log(2 * math.pi)
    order = torch.randperm(len(x), generator=generator)
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


def time_library(model, x, epochs, batch_size):
    trainer = Trainer(model, TrainerConfig(epochs=epochs, batch_size=batch_size,
                                           progress=False, keep_best=False))
    history = trainer.fit(x)
    return [r["seconds"] for r in history]


def time_plain(model, x, epochs, batch_size):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        plain_epoch(model.encoder, model.decoder, optimizer, x, batch_size, generator)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_pythae(model, x, epochs, batch_size):
    """pythae's VAE wrapped around the same networks, its own trainer loop (whole pipeline
    time divided by the epochs, so its set-up is included)."""
    try:
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.pipelines import TrainingPipeline
        from pythae.trainers import BaseTrainerConfig
    except ImportError:
        return None

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
    trainer_config = BaseTrainerConfig(num_epochs=epochs, per_device_train_batch_size=batch_size,
                                       output_dir="/tmp/pythae_speed", no_cuda=True)
    pipeline = TrainingPipeline(model=pythae_model, training_config=trainer_config)
    start = time.perf_counter()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        pipeline(train_data=x.numpy())
    return [(time.perf_counter() - start) / epochs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, _ = load_dataset("mnist5k", "train")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{len(x)} images, batch {args.batch_size}, {args.epochs} epochs x {args.repeats}")
    print(f"{'networks':8s} {'library s/epoch':>16s} {'plain s/epoch':>14s} {'overhead':>9s}"
          f" {'pythae s/epoch':>15s}")
    for nets in ("mlp", "conv"):
        lib, plain = [], []
        for _ in range(args.repeats):  # interleave so drifts hit both alike
            torch.manual_seed(0)
            model = create_model("vae", input_dim=(1, 28, 28), latent_dim=16, encoder=nets,
                                 decoder=nets)
            plain += time_plain(model, x, args.epochs, args.batch_size)
            torch.manual_seed(0)
            model = create_model("vae", input_dim=(1, 28, 28), latent_dim=16, encoder=nets,
                                 decoder=nets)
            lib += time_library(model, x, args.epochs, args.batch_size)
        lib_s, plain_s = statistics.median(lib), statistics.median(plain)
        torch.manual_seed(0)
        model = create_model("vae", input_dim=(1, 28, 28), latent_dim=16, encoder=nets,
                             decoder=nets)
        pythae = time_pythae(model, x, args.epochs, args.batch_size)
        pythae_text = "not installed" if pythae is None else f"{statistics.median(pythae):.3f}"
        print(f"{nets:8s} {lib_s:16.3f} {plain_s:14.3f} {100 * (lib_s / plain_s - 1):8.1f}%"
              f" {pythae_text:>15s}")


if __name__ == "__main__":
    main()
