"""One process of the data-parallel runs of test_distributed.py, started by torchrun.

``python -m torch.distributed.run --nproc_per_node 2 distributed_worker.py OUT BASELINE``
runs each scenario below with ``batch_size`` per process and writes, per rank, the final
state of the model and its history under OUT. BASELINE holds a one-process checkpoint to
resume. The test compares them with one process trained on the same data and seed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.serialization import save_tensors

#: Per-process batch; one process trains with RANKS * BATCH to take the same batches.
RANKS, BATCH = 2, 8
#: Sample counts that leave uneven last batches: 91 = 5 * 16 + 11 (parts of 6 and 5),
#: 97 = 6 * 16 + 1 (one part empty: that process trains on a stand-in), 37 = 2 * 16 + 5.
TRAIN_SIZE, STAND_IN_TRAIN_SIZE, EVAL_SIZE = 91, 97, 37
FEATURES = 12


def dataset(size: int, seed: int) -> torch.Tensor:
    return torch.randn(size, FEATURES, generator=torch.Generator().manual_seed(seed))


def build(name: str) -> torch.nn.Module:
    """The scenario's model, the same in every process (seeded)."""
    torch.manual_seed(1)
    nets = {"encoder_kwargs": {"hidden": [16]}, "decoder_kwargs": {"hidden": [16]}}
    options = {
        "ae": {"latent_dim": 3},
        "vqvae": {"latent_dim": 3, "num_codes": 6, "ema": True, "decay": 0.8,
                  "kmeans_init": True, "restart_dead_codes": True, "dead_after": 2},
        "factor_vae": {"latent_dim": 3, "discriminator_hidden": 8},
    }[name]
    return create_model(name, input_dim=(FEATURES,), likelihood="gaussian", **nets, **options)


def config(batch_size: int, **options) -> TrainerConfig:
    """SGD with momentum: Adam divides by the root of tiny second moments, which turns float
    rounding into visible differences for weights whose gradients are near zero."""
    return TrainerConfig(epochs=2, batch_size=batch_size, eval_batch_size=BATCH, seed=3,
                         optimizer="sgd", learning_rate=0.05,
                         optimizer_kwargs={"momentum": 0.9}, device="cpu", progress=False,
                         keep_best=False, **options)


def train(name: str, batch_size: int, **options) -> tuple[torch.nn.Module, list[dict]]:
    model = build(name)
    size = STAND_IN_TRAIN_SIZE if name == "vqvae" else TRAIN_SIZE
    history = Trainer(model, config(batch_size, **options)).fit(dataset(size, 0),
                                                                 dataset(EVAL_SIZE, 1))
    return model, history


def write(out: Path, scenario: str, model: torch.nn.Module, history: list[dict]) -> None:
    rank = int(os.environ["RANK"])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_tensors(out / f"{scenario}_rank{rank}.safetensors", state)
    (out / f"{scenario}_rank{rank}.json").write_text(json.dumps(history))


def main(out: Path, baseline: Path) -> None:
    torch.set_num_threads(1)
    model, history = train("ae", BATCH, output_dir=str(out / "ae_run"), checkpoint_every=1)
    write(out, "ae", model, history)
    for name in ("vqvae", "factor_vae"):
        write(out, name, *train(name, BATCH))
    write(out, "ae_even", *train("ae", BATCH, even_batches=True))
    resumed = build("ae")
    history = Trainer(resumed, config(BATCH)).fit(
        dataset(TRAIN_SIZE, 0), dataset(EVAL_SIZE, 1), resume_from=baseline)
    write(out, "ae_resumed", resumed, history)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
