"""Synthetic tables from vaebench's VAE and ctgan's TVAE side by side (issue 18), in one
script run.

The protocol: the bundled tables wine, breast_cancer, diabetes and synthetic_mixed, each
split 90 / 10 by ``vaebench.data.load_train_test`` (the split of ``vaebench train``) for
each seed; TVAE's default networks and training (Xu et al. 2019; ctgan's ``TVAE``:
encoder 128-128, decoder 128-128, latent 128, Adam 1e-3 with L2 1e-5, batch 500,
loss_factor 2) and vaebench's VAE with the same MLP widths, latent size, optimizer, batch
size and number of epochs, each epoch cut into even batches (``even_batches``: ctgan's
loader ends an epoch of 512 rows with a step on 12), its ``mixed`` likelihood (``vae``,
numbers' sigmas at their optimum, the default), the same with learned sigmas
(``vae_learned``), the beta-VAE of TVAE's weighting (``vae_beta0.5``), with TVAE's
mode-specific normalization of numbers (``vae_modes``), with the complete numbers scored
and drawn with the full covariance of their residuals (``vae_joint``, the default), that
with the prior's KL warm-up (``vae_joint_warmup``), or with the numbers' mean shifted by the
row's categories (``vae_conditional``), that with TVAE's weighting or the warm-up
(``vae_conditional_beta0.5``, ``vae_conditional_warmup``), and the VampPrior's mixture prior
with the same likelihood (``vamp_conditional``). ``oracle`` is no model: fresh rows of
synthetic_mixed's own generator, the figures of a perfect one (that table only). Each model
generates as many rows as the training split holds, scored by the same
``vaebench.metrics.tabular.table_quality``
against the training rows (shapes, pair trends, distance to the closest record) and the
held-out rows (ML efficacy of the table's target, the distance's reference). vaebench also
reports its held-out ELBO and importance-sampled log p(x) (nats per row), which TVAE does
not have. The table ends with each other row minus TVAE seed by seed (the same split and
seed): the mean difference, its standard error and the seeds won.

TVAE is given what it can take, as SDV would give it: dates as numbers (in the column's
unit), and each number with missing values filled with its mean plus a discrete
``<name>.is_null`` column (ctgan fails to sample after training on missing numbers,
sdv-dev/CTGAN#413); its rows are mapped back (missing where ``is_null``, dates) and rounded
like the data (the table's decimals, whole counts) by the same schema round trip as
vaebench's.

ctgan runs in its own environment, with vaebench installed beside it::

    python3 -m venv /work/tvae-venv
    /work/tvae-venv/bin/pip install torch==2.13.0
    /work/tvae-venv/bin/pip install ctgan sdmetrics && /work/tvae-venv/bin/pip install -e .
    /work/tvae-venv/bin/python benchmarks/tabular_tvae.py     # TVAE's 300 epochs, 3 seeds
    /work/tvae-venv/bin/python benchmarks/tabular_tvae.py --epochs 1000 \
        --tables wine,breast_cancer,diabetes --out docs/figures/tabular_tvae_1000
    /work/tvae-venv/bin/python benchmarks/tabular_tvae.py --batch 64 \
        --models tvae,vae,vae_joint,vae_conditional --out docs/figures/tabular_tvae_batch64
    /work/tvae-venv/bin/python benchmarks/tabular_tvae.py --repeats 10 --jobs 2 \
        --models tvae,vae_conditional,vae_conditional_warmup,vamp_conditional,oracle \
        --out docs/figures/tabular_tvae_10seeds
    /work/tvae-venv/bin/python benchmarks/tabular_tvae.py --epochs 1000 --repeats 6 --jobs 2 \
        --tables synthetic_mixed --models tvae,vae_conditional,oracle \
        --out docs/figures/tabular_tvae_1000_synthetic
    /work/tvae-venv/bin/python benchmarks/tabular_tvae.py --epochs 1000 --repeats 10 --jobs 2 \
        --tables breast_cancer --models tvae,vae_conditional,vae_learned \
        --out docs/figures/tabular_tvae_1000_breast_cancer

about 15, 25, 12, 12, 10 and 6 minutes with one thread (``--threads``, printed) in each of
``--jobs`` processes on a 2-core machine.
The tables are in docs/tabular.md, "Side by side with TVAE".
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.benchmark.report import HIGHER, paired_cell
from vaebench.data import load_train_test
from vaebench.data.table_datasets import TABLE_TARGETS, synthetic_mixed
from vaebench.data.tables import TIME_UNITS, TableData, TableSchema, infer_schema, load_table
from vaebench.metrics import likelihood_report
from vaebench.metrics.tabular import NUMERIC_KINDS, table_quality
from vaebench.tabular_likelihood import JointMember, generate_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pythae_runs import prepare_timing, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: TVAE's defaults, shared by both libraries.
WIDTHS, LATENT, BATCH, L2, LEARNING_RATE, LOSS_FACTOR = [128, 128], 128, 500, 1e-5, 1e-3, 2
#: The prior's KL warm-up of ``vae_joint_warmup`` (Bowman et al. 2016): its weight rises from
#: 0 to 1 over the first 250 optimizer steps (of 300 on a table that fits in one batch);
#: chosen among 50, 150 and 250 steps on wine and diabetes.
WARMUP = {"kl_schedule": "linear", "kl_anneal_steps": 250}
#: vaebench's models: (model, its options, TVAE's mode-specific normalization of numbers,
#: the mixed likelihood's column_sigma). TVAE's loss is loss_factor x reconstruction + KL,
#: the objective of a beta-VAE with beta = 1 / loss_factor.
VAEBENCH_MODELS = {"vae": ("vae", {}, False, "optimal"),
                   "vae_learned": ("vae", {}, False, "learned"),
                   "vae_beta0.5": ("beta_vae", {"beta": 1 / LOSS_FACTOR}, False, "optimal"),
                   "vae_modes": ("vae", {}, True, "optimal"),
                   "vae_joint": ("vae", {}, False, "joint"),
                   "vae_joint_warmup": ("vae", WARMUP, False, "joint"),
                   "vae_conditional": ("vae", {}, False, "conditional"),
                   "vae_conditional_beta0.5": ("beta_vae", {"beta": 1 / LOSS_FACTOR}, False,
                                               "conditional"),
                   "vae_conditional_warmup": ("vae", WARMUP, False, "conditional"),
                   "vamp_conditional": ("vamp", {}, False, "conditional")}
#: ``oracle``: fresh rows from the generator of ``synthetic_mixed`` (the one table whose
#: distribution is known), what a perfect model's rows score; left out on the other tables.
MODELS = ["tvae", *VAEBENCH_MODELS, "oracle"]
#: The generator seed of the oracle's rows is this plus the run's seed (the table's own is 0).
ORACLE_SEED = 10_000
EPOCH = pd.Timestamp(0)


# --- TVAE ----------------------------------------------------------------------------------

def run_tvae(real: pd.DataFrame, schema: TableSchema, epochs: int, batch: int,
             seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """ctgan's TVAE with its defaults trained on ``real``; as many rows as ``real`` holds."""
    from ctgan import TVAE

    model = TVAE(embedding_dim=LATENT, compress_dims=WIDTHS, decompress_dims=WIDTHS,
                 l2scale=L2, batch_size=batch, epochs=epochs, loss_factor=LOSS_FACTOR,
                 enable_gpu=False)
    model.set_random_state(seed)
    start = time.perf_counter()
    model.fit(_tvae_input(real, schema), discrete_columns=_tvae_discrete(schema))
    seconds = time.perf_counter() - start
    synthetic = _from_tvae(model.sample(len(real)), schema)
    _stop_joblib_workers()
    return synthetic, {"train_seconds": seconds}


def _stop_joblib_workers() -> None:
    """ctgan transforms columns in joblib's loky processes, which stay for 5 idle minutes
    and hold up the exit of a ``--jobs`` worker that ran TVAE until then."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def _tvae_input(frame: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    """``frame`` as TVAE takes it: dates as numbers, a number's missing values filled with
    its mean and marked in a discrete ``.is_null`` column."""
    columns = {}
    for column in schema.columns:
        values = frame[column.name]
        if column.kind == "datetime":
            values = (pd.to_datetime(values) - EPOCH) / pd.Timedelta(TIME_UNITS[column.unit])
        if column.kind in NUMERIC_KINDS and column.missing:
            values = values.astype(float)
            columns[f"{column.name}.is_null"] = values.isna()
            values = values.fillna(values.mean())
        columns[column.name] = values
    return pd.DataFrame(columns)


def _tvae_discrete(schema: TableSchema) -> list[str]:
    discrete = []
    for column in schema.columns:
        if column.kind not in NUMERIC_KINDS:
            discrete.append(column.name)
        elif column.missing:
            discrete.append(f"{column.name}.is_null")
    return discrete


def _from_tvae(frame: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    """TVAE's rows mapped back to the table (missing values, dates), then rounded like the
    data by the schema's round trip."""
    columns = {}
    for column in schema.columns:
        values = frame[column.name]
        if column.kind in NUMERIC_KINDS and column.missing:
            values = values.astype(float).where(~frame[f"{column.name}.is_null"].astype(bool))
        if column.kind == "datetime":
            values = EPOCH + pd.to_timedelta(np.round(values.astype(float)) * TIME_UNITS[
                column.unit], unit="ns")
        columns[column.name] = values
    return schema.decode(schema.encode(pd.DataFrame(columns)))


# --- vaebench ------------------------------------------------------------------------------

def run_vaebench(name: str, train: TableData, test: TableData, epochs: int, batch: int,
                 seed: int, k: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The vaebench model ``name`` (of :data:`VAEBENCH_MODELS`) with TVAE's widths and
    training; its rows and held-out likelihood."""
    model_name, options, _, column_sigma = VAEBENCH_MODELS[name]
    torch.manual_seed(seed)
    likelihood_kwargs = {**train.likelihood_kwargs, "column_sigma": column_sigma}
    model = create_model(model_name, **{**train.model_options(),
                                        "likelihood_kwargs": likelihood_kwargs},
                         latent_dim=LATENT, encoder_kwargs={"hidden": WIDTHS},
                         decoder_kwargs={"hidden": WIDTHS}, **options)
    config = TrainerConfig(epochs=epochs, batch_size=batch, learning_rate=LEARNING_RATE,
                           optimizer_kwargs={"weight_decay": L2}, seed=seed, device="cpu",
                           progress=False, even_batches=True)
    start = time.perf_counter()
    Trainer(model, config).fit(train)
    seconds = time.perf_counter() - start
    likelihood = likelihood_report(model, test, k=k, seed=seed)
    return generate_table(model, len(train), seed=seed), {
        "train_seconds": seconds, "test_elbo": likelihood["elbo"],
        "test_log_likelihood": likelihood["log_likelihood"], "k": k,
        "sigmas": _sigmas(model)}


def _sigmas(model: torch.nn.Module) -> dict[str, float]:
    """The sigma of each number's (or date's) Gaussian after training, in standard
    deviations of the column (of alpha under mode-specific normalization)."""
    sigmas = {}
    for column, part in zip(model.likelihood.table.columns, model.likelihood.columns,
                            strict=True):
        if column.likelihood == "gaussian" and not isinstance(part.distribution, JointMember):
            gaussian = getattr(part.distribution, "alpha", part.distribution)
            sigmas[str(column.name)] = round(gaussian.sigma.item(), 4)
    joint = model.likelihood.joint
    if joint is not None:  # each joint column's marginal sigma
        columns = model.likelihood.table.columns
        members = [str(column.name) for column, part in zip(columns, model.likelihood.columns,
                                                            strict=True)
                   if isinstance(part.distribution, JointMember)]
        sigmas.update(zip(members, joint.sigma.round(decimals=4).tolist(), strict=True))
    return sigmas


def _with_modes(train: TableData, test: TableData) -> tuple[TableData, TableData]:
    """The same rows encoded with TVAE's mode-specific normalization of numbers (the schema
    inferred, as for ``vae``, from the whole table)."""
    real, holdout = train.to_frame(), test.to_frame()
    schema = infer_schema(pd.concat([real, holdout], ignore_index=True), mode_specific=True)
    return (load_table(real, schema=schema, name="train data"),
            load_table(holdout, schema=schema, name="test data"))


# --- one table, one seed -------------------------------------------------------------------

def run_table(name: str, models: list[str], epochs: int, batch: int, seed: int,
              k: int) -> list[dict]:
    """Every model of ``models`` on the table ``name`` split by ``seed``: one row each."""
    train, test = load_train_test(name, seed=seed)
    real, holdout = train.to_frame(), test.to_frame()
    rows = []
    for model in models:
        if model == "oracle" and name != "synthetic_mixed":
            continue
        if model == "oracle":
            synthetic, figures = _oracle(len(real), train.schema, seed), {}
        elif model == "tvae":
            synthetic, figures = run_tvae(real, train.schema, epochs, batch, seed)
        else:
            data = _with_modes(train, test) if VAEBENCH_MODELS[model][2] else (train, test)
            synthetic, figures = run_vaebench(model, *data, epochs, batch, seed, k)
        quality = table_quality(real, synthetic, train.schema, TABLE_TARGETS[name],
                                holdout=holdout, seed=seed)
        rows.append({"table": name, "model": model, "seed": seed, **figures,
                     **_headline(quality), "quality": quality})
        print(f"{name:16s} {model:10s} seed {seed}: " + ", ".join(
            f"{key} {value:.3f}" for key, value in _headline(quality).items()), flush=True)
    return rows


def _oracle(n: int, schema: TableSchema, seed: int) -> pd.DataFrame:
    """``n`` fresh rows of ``synthetic_mixed``'s distribution, through the schema's round
    trip like every model's rows; a row with a category the table lacks (7 children, about
    1 in 10,000) left out."""
    fresh = synthetic_mixed(2 * n, seed=ORACLE_SEED + seed)
    known = np.ones(len(fresh), dtype=bool)
    for column in schema.columns:
        if column.kind == "categorical":
            values = fresh[column.name]
            known &= (values.isna() | values.isin(column.labels)).to_numpy()
    return schema.decode(schema.encode(fresh[known].head(n)))


def _headline(quality: dict[str, Any]) -> dict[str, float]:
    """The figures of the table in docs/tabular.md."""
    efficacy, privacy = quality["ml_efficacy"], quality["privacy"]
    score = "r2" if efficacy["task"] == "regression" else "f1"
    return {"column_shapes": quality["column_shapes"]["mean"],
            "column_pair_trends": quality["column_pair_trends"]["mean"],
            "ml_synthetic": efficacy["synthetic"][score], "ml_real": efficacy["real"][score],
            "dcr_median": privacy["synthetic"]["median"],
            "dcr_holdout_median": privacy["holdout"]["median"],
            "copies": privacy["synthetic"]["copies"],
            "privacy": privacy["overfitting_protection"]["score"]}


# --- the table -----------------------------------------------------------------------------

COLUMNS = [("column_shapes", "shapes"), ("column_pair_trends", "pair trends"),
           ("ml_synthetic", "ML: synthetic"), ("ml_real", "ML: real"),
           ("dcr_median", "DCR"), ("dcr_holdout_median", "DCR: held-out"),
           ("copies", "copies"), ("privacy", "privacy"), ("test_log_likelihood", "log p(x)"),
           ("test_elbo", "ELBO"), ("train_seconds", "train s")]


def markdown_table(rows: list[dict], settings: dict[str, Any]) -> str:
    """Means over the seeds (± their standard deviation with several seeds)."""
    lines = ["| table | model | " + " | ".join(title for _, title in COLUMNS) + " |",
             "| --- | --- |" + " ---: |" * len(COLUMNS)]
    for table in dict.fromkeys(row["table"] for row in rows):
        for model in dict.fromkeys(row["model"] for row in rows):
            group = [row for row in rows if row["table"] == table and row["model"] == model]
            if group:
                cells = [_cell([row.get(key) for row in group]) for key, _ in COLUMNS]
                lines.append(f"| {table} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{_footnote(settings)}\n" + _paired_table(rows)


#: The figures compared seed by seed with TVAE (each larger is better).
PAIRED = [("column_shapes", "shapes"), ("column_pair_trends", "pair trends"),
          ("ml_synthetic", "ML: synthetic"), ("privacy", "privacy")]


def _paired_table(rows: list[dict]) -> str:
    """Each other model (or the oracle) minus TVAE on the same split and seed: the mean
    difference ± its standard error, and the seeds where its figure is at least TVAE's."""
    tvae = {(row["table"], row["seed"]): row for row in rows if row["model"] == "tvae"}
    pairs = [(row, tvae[row["table"], row["seed"]]) for row in rows
             if row["model"] != "tvae" and (row["table"], row["seed"]) in tvae]
    if not pairs:
        return ""
    lines = ["", "Minus TVAE, seed by seed (mean ± standard error; seeds where the row is "
             "at least TVAE's):", "",
             "| table | model | " + " | ".join(title for _, title in PAIRED) + " |",
             "| --- | --- |" + " ---: |" * len(PAIRED)]
    for table, model in dict.fromkeys((row["table"], row["model"]) for row, _ in pairs):
        group = [(ours, theirs) for ours, theirs in pairs
                 if ours["table"] == table and ours["model"] == model]
        cells = [paired_cell([ours[key] - theirs[key] for ours, theirs in group], HIGHER)
                 for key, _ in PAIRED]
        lines.append(f"| {table} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(values: list[float | None]) -> str:
    if any(value is None for value in values):
        return "n/a"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}"


def _footnote(settings: dict[str, Any]) -> str:
    return (f"{settings['epochs']} epochs, batch {settings['batch_size']} (vaebench: even "
            f"batches), seeds {settings['seeds']} (each a 90 / 10 split and the models' seed), "
            f"torch threads {settings['threads']} in each of {settings.get('jobs', 1)} "
            "parallel jobs; ML: macro F1 (wine, breast_cancer, synthetic_mixed) or "
            "R^2 (diabetes) on the held-out rows; DCR: median distance to the closest "
            "training row; privacy: overfitting protection (1 best); log p(x) and ELBO: "
            f"held-out, nats per row, k = {settings['k']}.")


def main() -> None:
    args = _parser().parse_args()
    seeds = list(range(args.seed, args.seed + args.repeats))
    runs = [(table, args.models.split(","), args.epochs, args.batch, seed, args.k)
            for seed in seeds for table in args.tables.split(",")]
    with ProcessPoolExecutor(args.jobs, initializer=prepare_timing,
                             initargs=(args.threads,)) as pool:
        rows = [row for table_rows in pool.map(run_table, *zip(*runs, strict=True))
                for row in table_rows]
    settings = {"epochs": args.epochs, "seeds": seeds, "threads": args.threads, "k": args.k,
                "jobs": args.jobs,
                "batch_size": args.batch, "vaebench_even_batches": True, "widths": WIDTHS,
                "latent": LATENT, "l2": L2,
                "learning_rate": LEARNING_RATE, "tvae_loss_factor": LOSS_FACTOR,
                "python": platform.python_version(), "torch": torch.__version__,
                "ctgan": _version("ctgan"), "sdmetrics": _version("sdmetrics")}
    table = markdown_table(rows, settings)
    print(table)
    write_results(args.out, settings, rows, table)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300, help="TVAE's default: 300")
    parser.add_argument("--batch", type=int, default=BATCH, help="TVAE's default: 500")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--tables", default=",".join(TABLE_TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="seeds --seed, --seed + 1, ...: a split and a training each")
    parser.add_argument("--k", type=int, default=1000, help="importance draws of log p(x)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each job")
    parser.add_argument("--jobs", type=int, default=1,
                        help="(table, seed) runs at once, in as many processes")
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "tabular_tvae"))
    return parser


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
