"""vaebench's adversarial_ae and vaegan beside pythae's Adversarial_AE and VAEGAN on MNIST,
in one script run.

The protocol: MNIST (60,000 train / 10,000 test, pixels k/255), latent 16, the same
networks with the same initial weights in both libraries (vaebench's MLP encoder and
decoder with one hidden layer of 512 units, its decoder's logits through a sigmoid for
pythae; vaebench's discriminators, wrapped as pythae ``BaseDiscriminator``s), Adam 1e-3 for
every optimizer, batch 100, the same number of epochs, the last epoch's weights kept by
both. Adversarial autoencoder: deterministic encoder (pythae's
``deterministic_posterior=True``), Bernoulli reconstruction (pythae's ``"bce"``),
adversarial weight 0.5. VAE-GAN: features of the discriminator's first hidden layer (of
two), gamma 1 (pythae's ``adversarial_loss_scale`` 0.5 weighs its decoder's loss
0.5 recon - 0.5 GAN).

For each model it prints and writes (``--out``, JSON and a markdown table): the test
reconstruction error (squared error per pixel, at the posterior mean), the FID of
``--n-samples`` decoded prior draws (the same draws for both libraries) against the test
set in the features of vaebench's MNIST classifier (``ClassifierFeatures.for_dataset``),
and seconds per epoch (training plus the evaluation pass over the test set, set-up
included). One thread (``--threads``), printed.

pythae runs in its own environment with vaebench installed beside it (see
``pythae_side_by_side.py``). A quick check::

    /work/pythae-venv/bin/python benchmarks/pythae_adversarial.py --epochs 1 --train-size 2000

The full comparison (a few hours on one CPU thread; add ``--device cuda`` on a GPU)::

    /work/pythae-venv/bin/python benchmarks/pythae_adversarial.py --epochs 20
"""

from __future__ import annotations

import copy
import platform
import sys
import time
from pathlib import Path

import torch

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.data import load_dataset
from vaebench.metrics import ClassifierFeatures, reconstruction_mse, sample_quality

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pythae_runs import (  # noqa: E402
    compare_all,
    prepare_timing,
    run_pythae_pipeline,
    side_by_side_parser,
)

ROOT = Path(__file__).resolve().parent.parent
LATENT = 16
OPTIONS = {"input_dim": (1, 28, 28), "latent_dim": LATENT, "likelihood": "bernoulli",
           "encoder_kwargs": {"hidden": [512]}, "decoder_kwargs": {"hidden": [512]}}
MODELS = {"aae": ("Adversarial AE", "adversarial_ae", "Adversarial_AE"),
          "vaegan": ("VAE-GAN", "vaegan", "VAEGAN")}
LEARNING_RATE = 1e-3


def train_vaebench(name, x_train, x_test, args):
    torch.manual_seed(args.seed)
    model = create_model(name, **OPTIONS)
    initial = copy.deepcopy(model)
    config = TrainerConfig(epochs=args.epochs, batch_size=100, learning_rate=LEARNING_RATE,
                           eval_batch_size=100, seed=args.seed, device=args.device,
                           keep_best=False, progress=False)
    start = time.perf_counter()
    Trainer(model, config).fit(x_train, x_test)
    return model, initial, (time.perf_counter() - start) / args.epochs


def pythae_networks(initial):
    """pythae's encoder, decoder and discriminator around copies of vaebench's initial
    networks."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseDiscriminator, BaseEncoder

    gaussian = initial.name == "vaegan"

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(initial.encoder)

        def forward(self, x):
            out = self.net(x)
            if gaussian:
                mean, log_var = out.chunk(2, dim=1)
                return ModelOutput(embedding=mean, log_covariance=log_var)
            # deterministic: pythae multiplies the scale by 0
            return ModelOutput(embedding=out, log_covariance=torch.zeros_like(out))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(initial.decoder)

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    class Discriminator(BaseDiscriminator):
        """pythae's view of vaebench's discriminator: ``embedding`` is the probability of
        pythae's "true" class (prior draws for the AAE, real images for the VAE-GAN), the
        first of vaebench's two logits; layer 1 is the VAE-GAN's feature layer."""

        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(initial.discriminator)
            self.depth = initial.config.discriminator_layers + 1

        def forward(self, x, output_layer_levels=None):
            if gaussian:
                features, logits = self.net(x)
                out = ModelOutput(embedding_layer_1=features)
            else:
                logits, out = self.net(x), ModelOutput()
            out["embedding"] = torch.sigmoid(logits[:, 0] - logits[:, 1])
            return out

    return Encoder(), Decoder(), Discriminator()


def pythae_model(initial, name):
    import pythae.models as pm

    fields = {"input_dim": (1, 28, 28), "latent_dim": LATENT, "adversarial_loss_scale": 0.5}
    if name == "VAEGAN":
        config = pm.VAEGANConfig(**fields, reconstruction_layer=1)
    else:
        config = pm.Adversarial_AE_Config(**fields, reconstruction_loss="bce",
                                          deterministic_posterior=True)
    encoder, decoder, discriminator = pythae_networks(initial)
    return getattr(pm, name)(config, encoder=encoder, decoder=decoder,
                             discriminator=discriminator)


def train_pythae(model, x_train, x_test, args):
    from pythae.trainers import AdversarialTrainerConfig, CoupledOptimizerAdversarialTrainerConfig

    if model.model_name == "VAEGAN":
        config_cls = CoupledOptimizerAdversarialTrainerConfig
        rates = dict.fromkeys(("encoder_learning_rate", "decoder_learning_rate",
                               "discriminator_learning_rate"), LEARNING_RATE)
    else:
        config_cls = AdversarialTrainerConfig
        rates = dict.fromkeys(("autoencoder_learning_rate", "discriminator_learning_rate"),
                              LEARNING_RATE)
    _, seconds = run_pythae_pipeline(model, config_cls, x_train, x_test, args.epochs,
                                     args.seed, args.device, **rates)
    return model.eval(), seconds  # trained in place: the last epoch's weights


@torch.no_grad()
def pythae_reconstruction_mse(model, x_test) -> float:
    errors = [(model.decoder(model.encoder(x).embedding).reconstruction - x).pow(2).sum()
              for x in x_test.split(500)]
    return float(sum(errors)) / x_test.numel()


@torch.no_grad()
def decoded_prior_draws(decode, args) -> torch.Tensor:
    """Images decoded from ``--n-samples`` prior draws of the seed, the same for both."""
    z = torch.randn(args.n_samples, LATENT, generator=torch.Generator().manual_seed(args.seed))
    return torch.cat([decode(batch).clamp(0, 1) for batch in z.split(500)])


def compare(key, data, features, args) -> dict:
    label, ours_name, their_name = MODELS[key]
    x_train, x_test = data
    ours, initial, ours_epoch = train_vaebench(ours_name, x_train, x_test, args)
    ours.eval()
    row = {"model": label, "vaebench": ours_name, "pythae": their_name,
           "vaebench_mse": reconstruction_mse(ours, x_test),
           "vaebench_fid": sample_quality(decoded_prior_draws(
               lambda z: ours.likelihood.mean(ours.decode(z)), args), x_test, features)["fid"],
           "vaebench_s_per_epoch": ours_epoch}
    theirs, their_epoch = train_pythae(pythae_model(initial, their_name), x_train, x_test,
                                       args)
    row.update(pythae_mse=pythae_reconstruction_mse(theirs, x_test),
               pythae_fid=sample_quality(decoded_prior_draws(
                   lambda z: theirs.decoder(z).reconstruction, args), x_test,
                   features)["fid"],
               pythae_s_per_epoch=their_epoch)
    return row


def markdown(rows: list[dict], args, train_size: int) -> str:
    lines = [
        f"MNIST ({train_size} training images), latent {LATENT}, {args.epochs} epoch(s), "
        f"batch 100, Adam {LEARNING_RATE} for every optimizer, seed {args.seed}; "
        "reconstruction MSE per pixel on the test set; FID of "
        f"{args.n_samples} decoded prior draws against the test set in vaebench's MNIST "
        f"classifier features; {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}.",
        "",
        "| model | vaebench MSE | pythae MSE | vaebench FID | pythae FID | "
        "vaebench s/epoch | pythae s/epoch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {r['model']} | {r['vaebench_mse']:.4f} | {r['pythae_mse']:.4f} | "
              f"{r['vaebench_fid']:.2f} | {r['pythae_fid']:.2f} | "
              f"{r['vaebench_s_per_epoch']:.1f} | {r['pythae_s_per_epoch']:.1f} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = side_by_side_parser(__doc__.splitlines()[0], list(MODELS), 20,
                                 ROOT / "docs" / "figures" / "pythae_adversarial")
    parser.add_argument("--n-samples", type=int, default=10_000, help="draws for the FID")
    args = parser.parse_args()
    prepare_timing(args.threads)
    x_train, _ = load_dataset("mnist", "train")
    x_test, _ = load_dataset("mnist", "test")
    x_train = x_train[:args.train_size] if args.train_size else x_train
    features = ClassifierFeatures.for_dataset("mnist")
    compare_all(args, lambda key: compare(key, (x_train, x_test), features, args),
                lambda rows: markdown(rows, args, len(x_train)))


if __name__ == "__main__":
    main()
