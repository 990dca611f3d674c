"""The ``vaebench`` command: train a model and write its report, list models."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from vaebench import __version__
from vaebench.benchmark.config import EXECUTORS, dataset_key
from vaebench.data import DATASETS, DSPRITES_TRAIN_SIZE, ArrayData, load_train_test
from vaebench.data.table_datasets import TABLES
from vaebench.data.tables import TableData, is_table, likelihood_fields
from vaebench.likelihoods import AUTO, list_likelihoods
from vaebench.metrics import has_likelihood
from vaebench.models import create_model, get_model_class, list_models
from vaebench.samplers import get_sampler_class, list_samplers
from vaebench.serialization import write_json
from vaebench.tabular_likelihood import column_nll, is_tabular
from vaebench.training import Trainer, TrainerConfig
from vaebench.training.config import OPTIMIZERS, PRECISIONS, SCHEDULERS
from vaebench.training.distributed import is_main_process
from vaebench.training.trainer import latest_checkpoint


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"needs KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaebench",
        description="Train, sample, evaluate and benchmark generative autoencoders (AE, VAE, "
                    "VQ-VAE, ...).",
    )
    parser.add_argument("--version", action="version", version=f"vaebench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a model on a dataset and write its report folder",
        description="Train a model and write, under --output: the model folder, metrics.json, "
                    "history.json, reconstructions.png, samples.png and loss_curve.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--model", default="vae", help=f"one of: {', '.join(list_models())}")
    train.add_argument("--dataset", default="mnist5k",
                       help=f"bundled images ({', '.join(DATASETS)}) or tables "
                            f"({', '.join(TABLES)}), a folder of images, a .npy file, or a "
                            "table (.csv, .tsv, .parquet: docs/tabular.md)")
    train.add_argument("--data-root", default=None,
                       help="folder with MNIST files (IDX or mnist.npz); else $VAEBENCH_DATA")
    train.add_argument("--skip-bad-images", action="store_true",
                       help="leave out unreadable files of an image folder (with a warning) "
                            "instead of stopping")
    train.add_argument("--mode-specific", action="store_true",
                       help="tables: encode numeric columns by TVAE's mode-specific "
                            "normalization (docs/tabular.md)")
    train.add_argument("--train-size", type=int, default=None,
                       help="use only the first N training samples (quick runs); for "
                            f"dsprites, generate N (default {DSPRITES_TRAIN_SIZE}) and N/4 "
                            "for the test split")
    train.add_argument("--latent-dim", type=int, default=16, help="size of the latent code")
    train.add_argument("--encoder", default=None,
                       help="mlp, conv, spatial, or package.module:Class; None: the model's "
                            "own (mlp for most, spatial for the VQ family)")
    train.add_argument("--decoder", default=None,
                       help="mlp, conv, spatial, or package.module:Class (as --encoder)")
    train.add_argument("--likelihood", default=AUTO,
                       choices=[AUTO, *list_likelihoods(data_built=True)],
                       help="the reconstruction distribution p(x|z); auto: mixed (one per "
                            "column) for tables, bernoulli for 0/1 data, else gaussian with "
                            "sigma 'data' (docs/likelihoods.md)")
    train.add_argument("--sigma", default="1.0",
                       help="scale of the gaussian / laplace likelihood: a positive number, "
                            "'learned', 'optimal' or 'data' (the last two gaussian only; "
                            "--likelihood gaussian --sigma 1 is the unit-variance Gaussian)")
    train.add_argument("--sigma-per", default="scalar", choices=("scalar", "channel", "pixel"),
                       help="learned sigma: one scalar, one per channel or one per pixel")
    train.add_argument("--iwae-k", type=int, default=100,
                       help="importance samples of the test log-likelihood estimate")
    train.add_argument("--option", action="append", type=_parse_option, default=[],
                       metavar="KEY=VALUE", help="any other model config field (JSON value)")
    train.add_argument("--sampler", default=None,
                       help="sampler fitted after training for samples.png (default: the one "
                            "the model's paper generates with); see list-samplers")
    train.add_argument("--sampler-option", action="append", type=_parse_option, default=[],
                       metavar="KEY=VALUE", help="an option of the sampler (JSON value)")
    train.add_argument("--epochs", type=int, default=10, help="passes over the training data")
    train.add_argument("--batch-size", type=int, default=64,
                       help="samples per step (of each process under torchrun)")
    train.add_argument("--even-batches", action="store_true",
                       help="cut each epoch into batches of near-equal size instead of full "
                            "ones and a small last one (small data: 512 rows at batch 500 "
                            "make two steps of 256, not 500 and 12)")
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    train.add_argument("--optimizer", default="adam", choices=OPTIMIZERS, help="optimizer")
    train.add_argument("--scheduler", default="none", choices=SCHEDULERS,
                       help="learning-rate schedule")
    train.add_argument("--grad-clip", type=float, default=None, help="max gradient norm")
    train.add_argument("--keep", default="best", choices=("best", "last"),
                       help="weights to keep: those of the epoch with the lowest eval loss, "
                            "or the last epoch's (metrics.json says which was kept)")
    train.add_argument("--checkpoint-every", type=int, default=None, metavar="K",
                       help="save a resumable checkpoint every K epochs (and at the end)")
    train.add_argument("--seed", type=int, default=0,
                       help="seeds initialization, shuffling and sampling")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    train.add_argument("--precision", default="fp32", choices=PRECISIONS,
                       help="bf16 (CUDA, or a CPU with native bfloat16) or fp16 (CUDA): the "
                            "networks in half precision, the loss terms in float32")
    train.add_argument("--compile", action="store_true",
                       help="torch.compile the encoder and decoder")
    train.add_argument("--channels-last", action="store_true",
                       help="conv networks and image batches in channels-last memory format")
    train.add_argument("--output", required=True, help="folder for the report")
    train.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                       help="continue an interrupted run (same flags) from a checkpoint "
                            "folder, or without a value from the latest checkpoint in --output")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a run already in --output (else refused)")
    _add_trust_flag(train)
    _add_log_flags(train)
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    _add_sample_parser(commands)
    _add_evaluate_parser(commands)
    _add_push_parser(commands)
    _add_convert_pythae_parser(commands)
    commands.add_parser("list-models", help="list the registered models",
                        description="List the registered models, each with the first "
                                    "sentence of its description.")
    commands.add_parser("list-samplers", help="list the registered samplers",
                        description="List the registered samplers, each with the first "
                                    "sentence of its description.")
    _add_benchmark_parser(commands)
    return parser


def _add_model_folder_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a saved model folder (e.g. the model/ of vaebench train's output) "
                             "or hf://owner/name[@revision] on the Hugging Face Hub")
    parser.add_argument("--dataset", default=None,
                        help="data to fit samplers on / evaluate on (default: the data the "
                             "model was trained on, as its folder records)")
    parser.add_argument("--data-root", default=None, help="folder with the MNIST files")
    parser.add_argument("--seed", type=int, default=0, help="seeds fitting and drawing")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    _add_trust_flag(parser)


def _add_sample_parser(commands: Any) -> None:
    sample = commands.add_parser(
        "sample", help="draw samples from a saved model with a chosen sampler",
        description="Draw samples from a saved model. A sampler that needs fitting and is not "
                    "saved in the model folder yet is fitted on the model's training data "
                    "and saved there.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_model_folder_flags(sample)
    sample.add_argument("--sampler", default=None,
                        help=f"one of: {', '.join(list_samplers())} (default: the one the "
                             "model's paper generates with)")
    sample.add_argument("-n", type=int, default=64, help="number of samples")
    sample.add_argument("--output", default=None,
                        help="PNG grid of the samples (images), or a .csv / .parquet file "
                             "(tables)")
    sample.add_argument("--npy", default=None, help=".npy file of the raw samples")
    sample.add_argument("--option", action="append", type=_parse_option, default=[],
                        metavar="KEY=VALUE", help="a sampler option (JSON value); fits anew")
    sample.add_argument("--refit", action="store_true",
                        help="fit the sampler again even if one is saved")


def _add_evaluate_parser(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="evaluate a saved model and write a metrics JSON",
        description="Evaluate a saved model on the test split of its data: loss terms, "
                    "reconstruction errors, ELBO and importance-sampled log p(x), and FID / "
                    "precision / recall per sampler (for a table: the synthetic-table scores "
                    "of docs/tabular.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_model_folder_flags(evaluate)
    evaluate.add_argument("--output", default=None,
                          help="metrics JSON (default: evaluation.json in the model folder; "
                               "in the current folder for an hf:// model)")
    evaluate.add_argument("--k", type=int, default=100,
                          help="importance draws of the log p(x) estimate")
    evaluate.add_argument("--samplers", default=None,
                          help="comma-separated samplers to score (default: the model's own)")
    evaluate.add_argument("--n-samples", type=int, default=1000,
                          help="generated samples (or table rows) per sampler for FID / precision "
                               "/ recall (or the synthetic-table scores)")
    evaluate.add_argument("--features", default="classifier", choices=("classifier", "inception"),
                          help="feature network of FID / precision / recall")
    evaluate.add_argument("--no-sample-quality", action="store_true",
                          help="skip FID / precision / recall (tables: the synthetic-table "
                               "scores)")
    evaluate.add_argument("--target", default=None,
                          help="tables: the column whose prediction scores the ML efficacy")
    evaluate.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_push_parser(commands: Any) -> None:
    push = commands.add_parser(
        "push", help="upload a saved model to the Hugging Face Hub",
        description="Upload a saved model with its fitted samplers, the metrics of its "
                    "training run and a generated model card to a model repository on the "
                    "Hugging Face Hub (needs pip install 'vaebench[hub]'). The token is the "
                    "one of `hf auth login` or $HF_TOKEN. See docs/sharing.md.")
    push.add_argument("--model", required=True,
                      help="a saved model folder, or the --output folder of vaebench train "
                           "(its model/ and metrics.json)")
    push.add_argument("--repo", required=True,
                      help="owner/name of the model repository (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--message", default=None, help="the commit message")
    _add_trust_flag(push)


def _add_convert_pythae_parser(commands: Any) -> None:
    from vaebench.integrations.pythae import supported_models

    convert = commands.add_parser(
        "convert-pythae", help="convert a model saved by pythae into a vaebench model folder",
        description="Read a folder written by pythae's model.save() (model_config.json and "
                    "model.pt, loaded as plain tensors only) and write the equivalent "
                    "vaebench model folder. Converts pythae's default networks for: "
                    f"{', '.join(supported_models())}. Custom networks (encoder.pkl, "
                    "decoder.pkl: pickled code) are refused, never opened. See docs/pythae.md.")
    convert.add_argument("folder", metavar="DIR", help="the folder pythae's model.save() wrote")
    convert.add_argument("output", metavar="OUT",
                         help="the vaebench model folder to write (a model saved there is "
                              "replaced)")


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", default=None, metavar="NAMES",
                        help="experiment trackers, comma-separated: tensorboard, mlflow, "
                             "wandb (files under --output; docs/tracking.md)")
    parser.add_argument("--tracking-uri", default=None, metavar="URI",
                        help="the MLflow store of --log mlflow (default: a local SQLite "
                             "store in OUTPUT/mlruns)")


def _add_trust_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-code", action="store_true",
                        help="allow network classes named by import path (package.module:Class)"
                             " to be imported and built; only for code and files you trust")


def _seeds(text: str) -> int | list[int]:
    """``3`` (a count: seeds 0, 1, 2) or ``0,5,9`` (those seeds)."""
    try:
        if "," not in text:
            return int(text)
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds needs a count or a comma-separated list of "
                                         f"integers, got {text!r}") from None


def _parse_model_option(text: str) -> tuple[str, str, Any]:
    """``NAME.KEY=VALUE`` (a model's or a sampler's option) as (name, key, value)."""
    name, sep, rest = text.partition(".")
    key, value = _parse_option(rest)
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"needs NAME.KEY=VALUE, got {text!r}")
    return name, key, value


def _add_benchmark_parser(commands: Any) -> None:
    bench = commands.add_parser(
        "benchmark", help="train and compare many models x datasets x seeds, write a report",
        description="Train every model x dataset x seed with the same networks and budget, "
                    "evaluate every metric that applies and write, under --output: "
                    "report.md, results.csv, results.json, figures/ and runs/ (one folder per "
                    "run). Finished runs are skipped when started again. Settings come from "
                    "--config (JSON, or YAML with PyYAML) and the flags, which override it; "
                    "see docs/benchmark.md.")
    bench.add_argument("--config", default=None, help="benchmark settings file (.json, .yaml)")
    bench.add_argument("--models", default=None, help="comma-separated model names")
    bench.add_argument("--datasets", "--dataset", default=None,
                       help="comma-separated bundled dataset or table names (wine, ...) "
                            "or paths (image folders, .npy, .csv, .parquet)")
    bench.add_argument("--seeds", type=_seeds, default=None,
                       help="a count (3: seeds 0, 1, 2) or a list (0,5,9); default 3")
    bench.add_argument("--epochs", type=int, default=None, help="default 20")
    bench.add_argument("--batch-size", type=int, default=None, help="default 64")
    bench.add_argument("--even-batches", action="store_true", default=None,
                       help="cut each epoch into batches of near-equal size")
    bench.add_argument("--lr", type=float, default=None, help="learning rate, default 1e-3")
    bench.add_argument("--latent-dim", type=int, default=None, help="default 16")
    bench.add_argument("--likelihood", default=None, choices=[AUTO, *list_likelihoods()],
                       help="default auto: mixed for tables, bernoulli for 0/1 data, else "
                            "gaussian with sigma 'data'")
    bench.add_argument("--sigma", default=None, help="as for train; default 1.0")
    bench.add_argument("--sigma-per", default=None, choices=("scalar", "channel", "pixel"))
    bench.add_argument("--encoder", default=None,
                       help="one network for every model (default: each model's own)")
    bench.add_argument("--decoder", default=None, help="as --encoder")
    bench.add_argument("--option", action="append", type=_parse_model_option,
                       default=[], metavar="MODEL.KEY=VALUE",
                       help="a config field of one model, e.g. beta_vae.beta=4")
    bench.add_argument("--samplers", default=None,
                       help="comma-separated samplers scored besides each model's own, for "
                            "the models they serve; default normal,gmm")
    bench.add_argument("--sampler-option", action="append", type=_parse_model_option,
                       default=[], metavar="SAMPLER.KEY=VALUE",
                       help="an option of one sampler, e.g. pixelcnn.epochs=1")
    bench.add_argument("--train-size", type=int, default=None,
                       help="use the first N training samples (dsprites: generate N)")
    bench.add_argument("--mode-specific", action="store_true", default=None,
                       help="tables: numeric columns by TVAE's mode-specific normalization")
    bench.add_argument("--data-root", default=None, help="folder with the MNIST files")
    bench.add_argument("--skip-bad-images", action="store_true", default=None,
                       help="leave out unreadable files of image folders (with a warning)")
    bench.add_argument("--metrics", default=None,
                       help="comma-separated subset of loss, reconstruction, likelihood, "
                            "sample_quality, representation, disentanglement (default: all "
                            "that apply)")
    bench.add_argument("--features", default=None, choices=("classifier", "inception"),
                       help="feature network of FID / precision / recall; default classifier")
    bench.add_argument("--n-fid", type=int, default=None,
                       help="generated samples for FID / precision / recall; default 1000")
    bench.add_argument("--iwae-k", type=int, default=None,
                       help="importance samples of log p(x); default 100")
    bench.add_argument("--dsprites-n", type=int, default=None,
                       help="dSprites images for the disentanglement metrics; default 10000")
    bench.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    bench.add_argument("--output", default=None, help="benchmark folder; default bench")
    bench.add_argument("--progress", action="store_true", default=None,
                       help="show the trainer's progress bar of every run")
    bench.add_argument("--executor", default=None, choices=EXECUTORS,
                       help="local: runs in this process, or --jobs worker processes; ray: "
                            "each run a Ray task (pip install 'vaebench[ray]'); default local")
    bench.add_argument("--address", default=None,
                       help="the Ray cluster of --executor ray; default $RAY_ADDRESS, else a "
                            "local Ray")
    bench.add_argument("--jobs", type=int, default=None,
                       help="runs at once in local worker processes; default 1 (in this "
                            "process)")
    bench.add_argument("--cpus-per-run", type=int, default=None,
                       help="CPUs (torch threads) of each run; default: the CPUs shared "
                            "among --jobs, 1 per Ray task")
    bench.add_argument("--retry-failed", action="store_true",
                       help="run again the runs that failed before")
    bench.add_argument("--report-only", action="store_true",
                       help="only regenerate the report, tables and figures from --output")
    _add_trust_flag(bench)
    _add_log_flags(bench)


def _load_data(args: argparse.Namespace) -> tuple[ArrayData, ArrayData]:
    if args.mode_specific and not is_table(args.dataset):
        raise ValueError(f"--mode-specific encodes the numeric columns of a table; "
                         f"{args.dataset} is not a table")
    return load_train_test(args.dataset, train_size=args.train_size, seed=args.seed,
                           data_root=args.data_root, skip_bad_images=args.skip_bad_images,
                           mode_specific=args.mode_specific)


def _sigma(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _training_data_record(args: argparse.Namespace) -> dict[str, Any]:
    """How ``vaebench train`` loaded its data: saved with the model (see saved_model)."""
    bundled = args.dataset in DATASETS or args.dataset in TABLES
    dataset = args.dataset if bundled else str(Path(args.dataset).resolve())
    record = {"dataset": dataset, "train_size": args.train_size, "seed": args.seed,
              "data_root": args.data_root, "skip_bad_images": args.skip_bad_images}
    if args.mode_specific:
        record["mode_specific"] = True
    return record


def train_command(args: argparse.Namespace) -> int:
    from vaebench.integrations.trackers import TrackedRun, create_trackers, finishing

    output, dataset = Path(args.output), dataset_key(args.dataset)
    run = TrackedRun(output, f"{args.model}-{dataset}-seed{args.seed}",
                     tags={"model": args.model, "dataset": dataset, "seed": str(args.seed)},
                     tracking_uri=args.tracking_uri)
    trackers = create_trackers(args.log, run, close_at_run_end=False)
    with finishing(trackers, output):
        return _train_and_report(args, trackers)


def _train_and_report(args: argparse.Namespace, trackers: list[Any]) -> int:
    """``vaebench train`` with ``trackers`` as the trainer's callbacks."""
    from vaebench import viz
    from vaebench.samplers import save_sampler
    from vaebench.saved_model import fitted_sampler

    output = Path(args.output)
    resume_from = latest_checkpoint(output) if args.resume is True else args.resume
    train, test = _load_data(args)
    torch.manual_seed(args.seed)
    options = dict(args.option)
    options.update({k: v for k, v in (("encoder", args.encoder), ("decoder", args.decoder))
                    if v is not None})
    options.update(_likelihood(args, train, options.get("likelihood_kwargs")))
    model = create_model(
        args.model, input_dim=train.sample_shape, latent_dim=args.latent_dim,
        sigma_per=args.sigma_per, trust_code=args.trust_code, **options)
    trainer = Trainer(model, TrainerConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        optimizer=args.optimizer, scheduler=args.scheduler, grad_clip_norm=args.grad_clip,
        seed=args.seed, device=args.device, output_dir=str(output),
        checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
        overwrite=args.overwrite, keep_best=args.keep == "best", precision=args.precision,
        compile=args.compile, channels_last=args.channels_last,
        even_batches=args.even_batches), callbacks=trackers)
    start = time.perf_counter()
    history = trainer.fit(train, test, resume_from=resume_from)
    seconds = time.perf_counter() - start
    if not is_main_process():
        return 0  # data-parallel: rank 0 writes the report

    sampler_name = args.sampler or model.default_sampler
    _say(args, f"fitting the {sampler_name} sampler on the training codes")
    sampler, sampler_fit = fitted_sampler(sampler_name, model, train, seed=args.seed,
                                          progress=not args.no_progress,
                                          **dict(args.sampler_option))
    model.save(output / "model", training_data=_training_data_record(args))
    save_sampler(sampler, output / "model")
    model.eval()
    metrics = _evaluation_metrics(args, model, train, test)
    metrics.update(kept=trainer.kept, best_epoch=trainer.best_epoch, train_seconds=seconds,
                   sampler=sampler_fit, device=str(trainer.device),
                   torch_threads=torch.get_num_threads(), trainer=_trainer_record(trainer))
    write_json(output / "metrics.json", metrics)
    for tracker in trackers:
        tracker.log_summary(metrics)
    viz.save_loss_curve(history, output / "loss_curve.png")
    if viz.is_image_shape(train.sample_shape):
        x = test.take(slice(0, min(32, len(test)))).to(model.device)  # class-balanced order
        viz.save_reconstructions(x, model.reconstruct(x), output / "reconstructions.png")
        viz.save_image_grid(sampler.generate(model, 64, seed=args.seed), output / "samples.png")
    print(f"eval loss {metrics['eval_loss']:.2f} nats, recon {metrics['eval_recon_loss']:.2f} "
          f"nats, SSE/sample {metrics['eval_sse_per_sample']:.2f}, MSE/dim "
          f"{metrics['eval_mse_per_dim']:.4f} (epoch {trainer.kept['epoch']} kept: "
          f"{trainer.kept['why']}); report in {output}")
    return 0


def _likelihood(args: argparse.Namespace, train: ArrayData,
                given: Any = None) -> dict[str, Any]:
    """The likelihood fields of ``vaebench train``'s model, chosen as the benchmark chooses
    them (:func:`~vaebench.data.tables.likelihood_fields`); an automatic choice is said. A
    table's likelihood takes the ``likelihood_kwargs`` the user ``given`` over its own
    (``--option 'likelihood_kwargs={"column_sigma": "learned"}'``)."""
    fields = likelihood_fields(train, args.likelihood, _sigma(args.sigma))
    if isinstance(train, TableData) and isinstance(given, dict):
        fields["likelihood_kwargs"] = {**fields["likelihood_kwargs"], **given}
    if args.likelihood == AUTO and not isinstance(train, TableData):
        likelihood, sigma = fields["likelihood"], fields["sigma"]
        _say(args, f"likelihood {likelihood}" + (f" with sigma {sigma!r}" if likelihood ==
                                                 "gaussian" else "") +
             " (chosen from the data: --likelihood to choose another)")
    return fields


def _say(args: argparse.Namespace, text: str) -> None:
    """A line on what runs now, unless progress is hidden (rank 0's, data-parallel)."""
    if not getattr(args, "no_progress", False) and is_main_process():
        print(f"vaebench: {text}", file=sys.stderr, flush=True)


def _trainer_record(trainer: Trainer) -> dict[str, Any]:
    """The run's trainer settings for metrics.json, less where this machine put things."""
    record = trainer.config.to_dict()
    for machine_specific in ("output_dir", "device", "progress"):
        record.pop(machine_specific)
    return record


def _evaluation_metrics(args: argparse.Namespace, model: Any, train: ArrayData,
                        test: ArrayData) -> dict[str, Any]:
    """metrics.json's figures of the trained model on the test split."""
    from vaebench.saved_model import evaluate_model

    _say(args, f"evaluating on {len(test)} test samples")
    report = evaluate_model(model, test, {}, k=args.iwae_k, progress=not args.no_progress)
    scores, error = report["loss"], report["reconstruction"]
    metrics = {
        "model": args.model, "dataset": args.dataset, "epochs": args.epochs,
        "n_train": len(train), "n_eval": len(test),
        "eval_loss": scores["loss"], "eval_recon_loss": scores["recon"],
        "eval_terms": {k: v for k, v in scores.items() if k != "loss"},
        "eval_sse_per_sample": error["sse"], "eval_mse_per_dim": error["mse"],
    }
    if is_tabular(model):
        metrics["eval_column_nll"] = column_nll(model, test)
    if has_likelihood(model):
        likelihood = report["likelihood"]
        metrics.update({"test_elbo": likelihood["elbo"],
                        f"test_log_likelihood_k{args.iwae_k}": likelihood["log_likelihood"],
                        "likelihood": likelihood})
    return metrics


def _load_saved(args: argparse.Namespace) -> tuple[Any, Path, bool]:
    """The model of --model (a folder or an hf:// location), its local folder, and whether
    that folder may be written to (a Hub snapshot stays as downloaded)."""
    from vaebench.integrations.hub import is_hub_location, model_folder
    from vaebench.serialization import load_model
    from vaebench.training import resolve_device

    folder = model_folder(args.model)
    model = load_model(folder, resolve_device(args.device), trust_code=args.trust_code)
    return model, folder, not is_hub_location(args.model)


def sample_command(args: argparse.Namespace) -> int:
    from vaebench import viz
    from vaebench.data.tables import check_table_path, write_table
    from vaebench.saved_model import ready_sampler
    from vaebench.tabular_likelihood import generate_table

    if args.output is None and args.npy is None:
        raise ValueError("say where the samples go: --output grid.png and/or --npy out.npy")
    if args.n < 1:
        raise ValueError(f"-n must be positive, got {args.n}")
    model, folder, writable = _load_saved(args)
    table = is_tabular(model)
    if table and args.npy is not None:
        raise ValueError("the model generates a table: write it with --output FILE.csv "
                         "(or .parquet)")
    if table:
        check_table_path(args.output)  # before fitting a sampler
    if args.output is not None and not table and not viz.is_image_shape(
            model.config.input_dim):
        raise ValueError(f"the model's samples have shape {tuple(model.config.input_dim)}, not "
                         "images: write them with --npy")
    name = args.sampler or model.default_sampler
    sampler = ready_sampler(folder, model, name, dataset=args.dataset,
                            data_root=args.data_root, refit=args.refit, seed=args.seed,
                            keep=writable, **dict(args.option))
    if table:
        write_table(generate_table(model, args.n, sampler=sampler, seed=args.seed),
                    args.output)
        print(f"{args.n} rows of the {name} sampler written to {args.output}")
        return 0
    samples = sampler.generate(model, args.n, seed=args.seed).cpu()
    if args.output is not None:
        viz.save_image_grid(samples, args.output)
    if args.npy is not None:
        Path(args.npy).parent.mkdir(parents=True, exist_ok=True)
        np.save(args.npy, samples.numpy())
    written = " and ".join(str(p) for p in (args.output, args.npy) if p is not None)
    print(f"{args.n} samples of the {name} sampler written to {written}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from vaebench.data import load_train_test
    from vaebench.metrics import feature_network
    from vaebench.saved_model import (
        evaluate_model,
        ready_sampler,
        table_quality_report,
        training_record,
    )

    model, folder, writable = _load_saved(args)
    record = training_record(folder, args.dataset, args.data_root)
    train, test = load_train_test(**record)
    names = [n.strip() for n in (args.samplers or model.default_sampler).split(",") if n.strip()]
    table = is_tabular(model)
    features = None
    if not args.no_sample_quality and not table:
        features = feature_network(args.features, record["dataset"], test.sample_shape,
                                   model.device)
    samplers = {name: ready_sampler(folder, model, name, dataset=args.dataset,
                                    data_root=args.data_root, seed=args.seed, keep=writable)
                for name in names}
    report = evaluate_model(model, test, samplers, k=args.k, features=features,
                            n_samples=args.n_samples, seed=args.seed,
                            progress=not args.no_progress)
    if table and not args.no_sample_quality:
        report["table_quality"] = table_quality_report(
            model, train, test, samplers, n_samples=args.n_samples, target=args.target,
            seed=args.seed)
    output = Path(args.output or (folder if writable else Path()) / "evaluation.json")
    write_json(output, report)
    print(f"metrics of {model.name} on {len(test)} test samples written to {output}")
    return 0


def push_command(args: argparse.Namespace) -> int:
    from vaebench.integrations.hub import push_folder

    url = push_folder(args.model, args.repo, private=args.private,
                      commit_message=args.message, trust_code=args.trust_code)
    print(f"{args.model} pushed to hf://{args.repo}: {url}")
    return 0


def convert_pythae_command(args: argparse.Namespace) -> int:
    from vaebench.integrations.pythae import from_pythae
    from vaebench.serialization import save_model

    model = save_model(from_pythae(args.folder), args.output)
    print(f"{args.folder} converted to a vaebench model in {model}")
    return 0


#: A sentence ends at a full stop followed by a capital, but not after an abbreviation.
_SENTENCE_END = re.compile(
    r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bApp)(?<!\bEq)(?<!\bSec)(?<!\bFig)\.\s+(?=[A-Z])")


def _first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, whole."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    end = _SENTENCE_END.search(paragraph)
    return paragraph if end is None else paragraph[:end.start() + 1]


def list_models_command(args: argparse.Namespace) -> int:
    for name in list_models():
        print(f"{name:14s} {_first_sentence(get_model_class(name).__doc__)}")
    return 0


def list_samplers_command(args: argparse.Namespace) -> int:
    for name in list_samplers():
        print(f"{name:14s} {_first_sentence(get_sampler_class(name).__doc__)}")
    return 0


def benchmark_command(args: argparse.Namespace) -> int:
    from vaebench.benchmark import BenchmarkConfig, run_benchmark, write_report
    from vaebench.benchmark.config import merge_options, read_config_file

    file_values = read_config_file(args.config) if args.config else {}
    if args.report_only:
        output = args.output or file_values.get("output")
        if not output:
            raise ValueError("--report-only needs --output (or a --config naming output)")
        print(f"report: {write_report(output)}")
        return 0
    model_options: dict[str, dict[str, Any]] = {}
    for name, key, value in args.option:
        model_options.setdefault(name, {})[key] = value
    sampler_options: dict[str, dict[str, Any]] = {}
    for name, key, value in args.sampler_option:
        sampler_options.setdefault(name, {})[key] = value
    flags = {"models": args.models, "datasets": args.datasets, "seeds": args.seeds,
             "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
             "even_batches": args.even_batches,
             "latent_dim": args.latent_dim, "likelihood": args.likelihood,
             "sigma": None if args.sigma is None else _sigma(args.sigma),
             "sigma_per": args.sigma_per, "encoder": args.encoder, "decoder": args.decoder,
             "model_options": model_options or None,
             "samplers": args.samplers,
             "sampler_options": sampler_options or None, "train_size": args.train_size,
             "mode_specific": args.mode_specific,
             "data_root": args.data_root, "skip_bad_images": args.skip_bad_images,
             "metrics": args.metrics, "features": args.features,
             "n_fid": args.n_fid, "iwae_k": args.iwae_k, "dsprites_n": args.dsprites_n,
             "device": args.device, "output": args.output, "progress": args.progress,
             "executor": args.executor, "address": args.address, "jobs": args.jobs,
             "cpus_per_run": args.cpus_per_run, "log": args.log,
             "tracking_uri": args.tracking_uri}
    config = BenchmarkConfig(**merge_options(file_values, flags))
    try:
        results = run_benchmark(config, retry_failed=args.retry_failed,
                                trust_code=args.trust_code)
    except KeyboardInterrupt:
        return 130
    return 0 if any(r["status"] == "ok" for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"train": train_command, "sample": sample_command,
                "evaluate": evaluate_command, "list-models": list_models_command,
                "list-samplers": list_samplers_command, "benchmark": benchmark_command,
                "push": push_command, "convert-pythae": convert_pythae_command}
    try:
        return handlers[args.command](args)
    except ValidationError as err:
        problems = [f"{'.'.join(str(part) for part in p['loc']) or err.title}: {p['msg']}"
                    for p in err.errors()]
        return _fail("; ".join(problems))
    except (ValueError, OSError, ImportError, FloatingPointError) as err:
        return _fail(str(err) or type(err).__name__)


def _fail(message: str) -> int:
    """Print an expected failure as one line (no traceback); the exit code is 2."""
    print(f"vaebench: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
