"""What the side-by-side scripts share when they run pythae beside vaebench: pythae's
training pipeline, quiet and timed; the set-up of a fair timing; the output files."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def prepare_timing(threads: int) -> None:
    """Fix the thread count, and pay the first optimizer's import of torch._dynamo (about
    1.5 s) before timing, so that it is not charged to whichever library trains first."""
    torch.set_num_threads(threads)
    print(f"torch threads: {torch.get_num_threads()}")
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def run_pythae_pipeline(model: Any, config_cls: type, x_train: torch.Tensor,
                        x_test: torch.Tensor | None, epochs: int, seed: int, device: str,
                        batch_size: int = 100, **rates: float) -> tuple[Any, float]:
    """Train ``model`` with pythae's ``TrainingPipeline`` (its logs and prints silenced) and
    a ``config_cls`` trainer config with learning ``rates``, ``batch_size`` samples a step;
    returns the pipeline and the seconds per epoch."""
    from pythae.pipelines import TrainingPipeline

    for name in list(logging.root.manager.loggerDict):  # pythae logs every epoch
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as out:
        config = config_cls(output_dir=out, num_epochs=epochs,
                            per_device_train_batch_size=batch_size,
                            per_device_eval_batch_size=batch_size, seed=seed,
                            no_cuda=device == "cpu", **rates)
        pipeline = TrainingPipeline(model=model, training_config=config)
        start = time.perf_counter()
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            pipeline(train_data=x_train, eval_data=x_test)
        return pipeline, (time.perf_counter() - start) / epochs


def write_results(out: str | Path, settings: dict[str, Any], rows: list[dict],
                  table: str) -> None:
    """``out``.json (settings and rows) and ``out``.md (the table)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows},
                                                   indent=2) + "\n")
    out.with_suffix(".md").write_text(table)


def compare_all(args: argparse.Namespace, compare: Callable[[str], dict],
                markdown: Callable[[list[dict]], str]) -> None:
    """``compare(key)`` for each of ``args.models`` (printed as it ends), then the table of
    the rows printed and written to ``args.out``."""
    rows = []
    for key in [part.strip() for part in args.models.split(",")]:
        rows.append(compare(key))
        print(json.dumps(rows[-1]), flush=True)
    table = markdown(rows)
    print(table)
    write_results(args.out, vars(args), rows, table)


def side_by_side_parser(description: str, models: list[str], epochs: int,
                        out: Path) -> argparse.ArgumentParser:
    """The flags every side-by-side script takes; a script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--models", default=",".join(models),
                        help=f"comma-separated, from {', '.join(models)} (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-size", type=int, default=None, help="a quick check only")
    parser.add_argument("--out", default=str(out))
    return parser
