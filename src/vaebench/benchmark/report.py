"""The benchmark report, made from the runs' ``result.json`` files alone.

:func:`write_report` writes, in the benchmark folder: ``results.json`` (one row per run:
dataset, model, seed, status, error, note, seconds, every metric flattened to ``group.key``,
the run's config), ``results.csv`` (the same rows, config flattened to ``config.key``),
``report.md`` (one table per dataset: mean +/- std over seeds, the best mean of each column
in bold) and ``figures/{dataset}/`` (reconstructions and samples of every model side by side,
a latent traversal per model, a bar chart per metric). It needs no data and no model, so it
can be regenerated at any time (``vaebench benchmark --report-only --output DIR``).

Every ``result.json`` is checked first. A malformed one (not JSON, not an object, a field of
the wrong type) stands for a failed run whose error names the file and the problem. An ok
result that lacks a metric group it should have, or has a value that is not a finite number
where a number belongs (NaN, inf, a string, null), becomes ``"incomplete"``: its ``note``
says what is wrong, the value is left out of the rows and the means, and the run is not
counted as ok.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaebench.benchmark.config import METRICS
from vaebench.files import atomic_write, write_json

HIGHER, LOWER = "higher", "lower"
#: Statuses of the runs whose values are shown: an ok run and an incomplete one (an ok run
#: with some values missing, each left out on its own).
SHOWN = ("ok", "incomplete")


@dataclass(frozen=True)
class Column:
    """A column of the report's tables: a flattened result key, its label, which
    direction is better (None: not ranked) and whether its values are whole numbers such
    as a dimension, shown as they are rather than as mean ± std."""

    key: str
    label: str
    better: str | None
    whole: bool = False

    @property
    def arrow(self) -> str:
        return {HIGHER: " ↑", LOWER: " ↓"}.get(self.better or "", "")


#: The columns of the tables, in order; a column is shown when some run has a value.
COLUMNS = (
    Column("loss.loss", "test loss", LOWER),
    Column("reconstruction.sse", "SSE/sample", LOWER),
    Column("reconstruction.mse", "MSE/dim", LOWER),
    Column("likelihood.elbo", "ELBO", HIGHER),
    Column("likelihood.log_likelihood", "log p(x)", HIGHER),
    Column("conditional_likelihood.elbo", "ELBO(x∣y)", HIGHER),
    Column("conditional_likelihood.log_likelihood", "log p(x∣y)", HIGHER),
    Column("sample_quality.fid", "FID", LOWER),
    Column("sample_quality.precision", "precision", HIGHER),
    Column("sample_quality.recall", "recall", HIGHER),
    Column("representation.linear_probe", "linear probe", HIGHER),
    Column("representation.knn", "k-NN", HIGHER),
    Column("representation.latent_dim", "probe dim", None, whole=True),
    Column("disentanglement.mig", "MIG", HIGHER),
    Column("disentanglement.dci_disentanglement", "DCI D", HIGHER),
    Column("disentanglement.dci_completeness", "DCI C", HIGHER),
    Column("disentanglement.dci_informativeness", "DCI I", HIGHER),
    Column("disentanglement.sap", "SAP", HIGHER),
    Column("disentanglement.factor_vae_score", "FactorVAE", HIGHER),
    Column("train_seconds", "train s", None),
)
#: Which direction is better for keys outside the tables (e.g. in results.csv).
DIRECTIONS = {c.key: c.better for c in COLUMNS} | {
    "likelihood.nll_bits_per_dim": LOWER, "likelihood.neg_elbo_bits_per_dim": LOWER,
    "loss.recon": LOWER, "conditional_likelihood.nll_bits_per_dim": LOWER,
    "conditional_likelihood.neg_elbo_bits_per_dim": LOWER,
}
#: Config fields listed as the benchmark's budget in the report header.
BUDGET = ("epochs", "batch_size", "learning_rate", "latent_dim", "likelihood", "sigma",
          "sigma_per", "encoder", "decoder", "train_size", "data_seed", "features", "n_fid",
          "iwae_k", "dsprites_n", "metrics")
_BASE = ("dataset", "model", "seed", "status", "error", "note", "seconds", "train_seconds",
         "eval_seconds", "best_epoch", "best_eval_loss", "n_train", "n_test")


# --------------------------------------------------------------------------------------------
# results and rows
# --------------------------------------------------------------------------------------------


def collect_results(output: str | Path) -> list[dict[str, Any]]:
    """Every ``runs/*/*/seed*/result.json`` under ``output``, checked by
    :func:`review_result`; a malformed one becomes a failed run whose error names the file
    and the problem (left out, with a warning, outside a ``seed{N}`` folder)."""
    from vaebench.benchmark.runner import RESULT_FILE, load_result

    output = Path(output)
    results = []
    for path in sorted(output.glob(f"runs/*/*/seed*/{RESULT_FILE}")):
        name = path.relative_to(output).as_posix()
        result, problem = load_result(path.parent)
        if problem is not None:
            result = _malformed_run(path, name, problem)
            if result is None:
                warnings.warn(f"vaebench: {path} is malformed ({problem}) and left out of the "
                              "report", RuntimeWarning, stacklevel=2)
        if result is not None:
            results.append(review_result(result, name))
    return results


def _malformed_run(path: Path, name: str, problem: str) -> dict[str, Any] | None:
    """A failed run standing for the malformed ``result.json`` at ``path`` (``name``: its
    path in the benchmark folder), from the folder names; None outside a ``seed{N}`` folder."""
    seed = re.fullmatch(r"seed(\d+)", path.parent.name)
    if seed is None:
        return None
    return {"dataset": path.parent.parent.parent.name, "model": path.parent.parent.name,
            "seed": int(seed[1]), "status": "failed", "metrics": {}, "config": {},
            "error": f"{name} is malformed ({problem}); running the benchmark again "
                     "redoes the run"}


def review_result(result: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """``result`` as the report counts it: an ok result that lacks a metric group it should
    have, or has a value that is not a finite number where a number belongs, is returned as
    ``"incomplete"`` with a ``note`` saying what is wrong (in file ``source``)."""
    from vaebench.benchmark.runner import describe_value, unaccounted_metrics

    if result.get("status") != "ok":
        return result
    problems = [f"no {group} metrics (nor an error or a reason why they do not apply)"
                for group in unaccounted_metrics(result)]
    problems += [f"{key} is {describe_value(value)}, not a finite number"
                 for key, value in _fields(result).items() if _not_a_number(key, value)]
    if not problems:
        return result
    note = "; ".join(problems)
    return {**result, "status": "incomplete", "note": f"{source}: {note}" if source else note}


def _flatten(value: Any, prefix: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _fields(result: dict[str, Any]) -> dict[str, Any]:
    """The run's fields of :data:`_BASE` that ``result`` has and its metrics as
    ``group.key``, as they are in the file."""
    fields = {key: result[key] for key in _BASE if key in result}
    for group, values in (result.get("metrics") or {}).items():
        fields.update(_flatten(values, group))
    return fields


def _not_a_number(key: str, value: Any) -> bool:
    """Whether ``value`` is not a finite number where one belongs: a ranked or tabled key
    (:data:`DIRECTIONS`) or any float (a NaN or an infinity)."""
    return (key in DIRECTIONS or isinstance(value, float)) and _number(value) is None


def result_row(result: dict[str, Any]) -> dict[str, Any]:
    """One flat row: the run's fields, ``group.key`` for every metric (None for a value
    that is not a finite number where one belongs: the run's note says what it was),
    ``metric_error.group`` for every metric that failed, and ``config`` (a dict). The
    likelihood of a model conditioned on labels is the group ``conditional_likelihood``."""
    row = {key: None for key in _BASE}
    row.update({_row_key(result, key): None if _not_a_number(key, value) else value
                for key, value in _fields(result).items()})
    for group, message in (result.get("metric_errors") or {}).items():
        row[f"metric_error.{_row_group(result, group)}"] = message
    row["config"] = result.get("config") or {}
    return row


def _row_group(result: dict[str, Any], group: str) -> str:
    """The group a metric is shown under: the likelihood of a model conditioned on labels
    (the CVAE's log p(x | y)) apart from the others' log p(x), as ``conditional_likelihood``."""
    from vaebench.models import get_model_class, list_models

    model = result.get("model")
    if group == "likelihood" and model in list_models() and get_model_class(model).needs_labels:
        return "conditional_likelihood"
    return group


def _row_key(result: dict[str, Any], key: str) -> str:
    """``key`` of :func:`_fields` as a row names it (see :func:`_row_group`)."""
    group, dot, name = key.partition(".")
    return f"{_row_group(result, group)}.{name}" if dot else key


def _csv_text(rows: list[dict[str, Any]]) -> str:
    flat = []
    for row in rows:
        out = {k: v for k, v in row.items() if k != "config"}
        out.update(_flatten(row.get("config") or {}, "config"))
        flat.append(out)
    columns: list[str] = []
    for row in flat:
        columns += [k for k in row if k not in columns]
    base = [k for k in _BASE if k in columns]
    metrics = [k for k in columns if k not in base and not k.startswith(("config.",
                                                                         "metric_error."))]
    group_rank = {g: i for i, g in enumerate(METRICS)}
    metrics.sort(key=lambda k: (group_rank.get(k.split(".")[0], len(METRICS)), k))
    rest = sorted(k for k in columns if k.startswith("metric_error.")) + \
        [k for k in columns if k.startswith("config.")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=base + metrics + rest, lineterminator="\n")
    writer.writeheader()
    for row in flat:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


# --------------------------------------------------------------------------------------------
# statistics and formatting
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def summarize(rows: list[dict[str, Any]], key: str) -> tuple[float, float, int] | None:
    """(mean, std, n) of ``key`` over the ok and incomplete rows that have a finite value;
    std is the sample standard deviation (ddof=1), NaN for a single value; None without
    values."""
    values = [v for v in (_number(r.get(key)) for r in rows if r.get("status") in SHOWN)
              if v is not None]
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def _decimals(value: float) -> int:
    size = abs(value)
    if size >= 1000:
        return 0
    if size >= 100:
        return 1
    if size >= 10:
        return 2
    if size >= 1:
        return 3
    if size == 0:
        return 4
    return min(8, max(4, 2 - math.floor(math.log10(size))))


def format_mean_std(mean: float, std: float) -> str:
    """``mean ± std`` with as many decimals as the mean's size calls for (std the same)."""
    places = _decimals(mean)
    if math.isnan(std):
        return f"{mean:.{places}f}"
    return f"{mean:.{places}f} ± {std:.{places}f}"


def _model_order(rows: list[dict[str, Any]], order: list[str] | None) -> list[str]:
    present = list(dict.fromkeys(r["model"] for r in rows))
    if not order:
        return sorted(present)
    return [m for m in order if m in present] + sorted(m for m in present if m not in order)


def _columns(rows: list[dict[str, Any]]) -> list[Column]:
    out = []
    for column in COLUMNS:
        if summarize(rows, column.key) is None:
            continue
        if column.key.endswith(".log_likelihood"):
            column = _with_k(column, rows)
        out.append(column)
    return out


def _with_k(column: Column, rows: list[dict[str, Any]]) -> Column:
    """A log-likelihood column labelled with the importance samples K of its estimates."""
    group = column.key.split(".")[0]
    ks = sorted({k for r in rows if isinstance(k := r.get(f"{group}.k"), int)
                 and not isinstance(k, bool) and k > 0})
    if not ks:
        return column
    return Column(column.key, f"{column.label} K={'/'.join(map(str, ks))}", column.better)


def best_models(rows: list[dict[str, Any]], column: Column, models: list[str]) -> set[str]:
    """The models whose mean is the best of ``column`` (ties: all of them); none when fewer
    than two models have a value, or when every model has the same mean (say, precision 0
    for all): then no value stands out."""
    if column.better is None:
        return set()
    means = {}
    for model in models:
        summary = summarize([r for r in rows if r["model"] == model], column.key)
        if summary is not None:
            means[model] = summary[0]
    if len(set(means.values())) < 2:  # nothing to compare, or all tie
        return set()
    best = max(means.values()) if column.better == HIGHER else min(means.values())
    return {model for model, mean in means.items() if mean == best}


def markdown_table(rows: list[dict[str, Any]], order: list[str] | None = None) -> str:
    """The table of one dataset: a row per model, a column per metric with a value, cells
    ``mean ± std`` over the model's ok and incomplete runs (``(n=k)`` when fewer runs have
    the value), the best mean of each ranked column in bold; models with neither read
    ``failed``. The ok-runs column counts clean ok runs, naming incomplete ones apart."""
    models = _model_order(rows, order)
    columns = _columns(rows)
    header = ["model", "ok runs"] + [c.label + c.arrow for c in columns]
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join(["---"] * 2 + ["---:"] * len(columns)) + " |"]
    best = {c.key: best_models(rows, c, models) for c in columns}
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        ok = sum(r.get("status") == "ok" for r in mine)
        incomplete = sum(r.get("status") == "incomplete" for r in mine)
        counted = ok + incomplete
        cells = [f"`{model}`", f"{ok}/{len(mine)}" + (f" ({incomplete} incomplete)"
                                                     if incomplete else "")]
        for column in columns:
            text = "failed" if counted == 0 else _cell(mine, column, counted)
            cells.append(f"**{text}**" if model in best[column.key] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


BY_SAMPLER = "sample_quality.by_sampler."


def sampler_names(rows: list[dict[str, Any]]) -> list[str]:
    """The samplers with sample-quality figures in ``rows``: ``normal`` and ``gmm`` first,
    then the others by name."""
    found = {key[len(BY_SAMPLER):].rsplit(".", 1)[0] for row in rows for key in row
             if key.startswith(BY_SAMPLER)}
    first = [name for name in ("normal", "gmm") if name in found]
    return first + sorted(found - set(first))


def sampler_table(rows: list[dict[str, Any]], order: list[str] | None = None) -> str | None:
    """FID of each model (rows) with each sampler (columns), mean ± std over seeds, the
    model's own sampler named; the best sampler of each model in bold. None without
    per-sampler figures."""
    from vaebench.models import get_model_class, list_models

    names = sampler_names(rows)
    if not names:
        return None
    lines = ["| model | own sampler | " + " | ".join(f"`{n}` FID ↓" for n in names) + " |",
             "| --- | --- | " + " | ".join(["---:"] * len(names)) + " |"]
    for model in _model_order(rows, order):
        mine = [r for r in rows if r["model"] == model and r.get("status") in SHOWN]
        summaries = {n: summarize(mine, f"{BY_SAMPLER}{n}.fid") for n in names}
        means = {n: s[0] for n, s in summaries.items() if s is not None}
        best = min(means.values()) if len(set(means.values())) > 1 else None
        cells = ["–" if s is None else format_mean_std(s[0], s[1]) for s in summaries.values()]
        cells = [f"**{cell}**" if best is not None and means.get(n) == best else cell
                 for n, cell in zip(names, cells, strict=True)]
        own = get_model_class(model).default_sampler if model in list_models() else "?"
        lines.append(f"| `{model}` | `{own}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(rows: list[dict[str, Any]], column: Column, counted: int) -> str:
    """One model's cell of ``column`` over its ``rows`` (``counted`` of them shown)."""
    summary = summarize(rows, column.key)
    if summary is None:
        group = column.key.split(".")[0]
        return "error" if any(r.get(f"metric_error.{group}") for r in rows) else "–"
    if column.whole:
        return "/".join(str(int(v)) for v in sorted({_number(r.get(column.key)) for r in rows
                                                     if r.get("status") in SHOWN} - {None}))
    mean, std, n = summary
    return format_mean_std(mean, std) + (f" (n={n})" if n < counted else "")


def _model_list(names: list[str], models: set[str]) -> str:
    """``names`` as code spans, or "every model" when they are all of several ``models``."""
    if len(models) > 1 and set(names) == models:
        return "every model"
    return ", ".join(f"`{name}`" for name in names)


def _one_line(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


def _order(results: list[dict[str, Any]], config: dict[str, Any] | None):
    """(dataset keys, model names) in the configured order, then any others found."""
    from vaebench.benchmark.config import dataset_key

    datasets = [dataset_key(d) for d in (config or {}).get("datasets") or []]
    models = list((config or {}).get("models") or [])
    found_d = list(dict.fromkeys(r["dataset"] for r in results))
    found_m = list(dict.fromkeys(r["model"] for r in results))
    datasets = [d for d in datasets if d in found_d] + sorted(d for d in found_d
                                                              if d not in datasets)
    models = models + sorted(m for m in found_m if m not in models)
    return datasets, models


def _hardware_lines(results: list[dict[str, Any]]) -> list[str]:
    seen = []
    for result in results:
        hw = result.get("hardware") or {}
        if not hw:
            continue
        text = (f"{hw.get('processor') or 'unknown processor'}, {hw.get('cpu_count')} CPUs, "
                f"{hw.get('threads')} torch threads, torch {hw.get('torch')}, device "
                f"{hw.get('device')}" + (f" ({hw['gpu']})" if hw.get("gpu") else "") +
                f", {hw.get('platform')}")
        if text not in seen:
            seen.append(text)
    return seen or ["unknown"]


def _budget_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    configs = [result["config"] for result in results if result.get("config")]
    for key in BUDGET:
        values = []
        for config in configs:
            value = config.get(key)
            if value not in values:
                values.append(value)
        if not values:
            continue
        shown = ", ".join("all" if v is None and key in ("train_size", "metrics") else
                          "each model's default" if v is None else
                          ", ".join(map(str, v)) if isinstance(v, list) else str(v)
                          for v in values)
        lines.append(f"`{key}` {shown}" + (" (**differs between runs**)" if len(values) > 1
                                           else ""))
    options = {}
    for result in results:
        opts = (result.get("config") or {}).get("model_options")
        if opts:
            options.setdefault(result["model"], json.dumps(opts, sort_keys=True))
    for model, text in options.items():
        lines.append(f"`{model}` options {text}")
    return lines


def _feature_line(rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    names = {}
    for row in rows:
        name = row.get("sample_quality.features")
        if name and isinstance(name, str):
            names.setdefault(name, row)
    if not names:
        reasons = {(r.get("not_applicable") or {}).get("sample_quality") or
                   (r.get("metric_errors") or {}).get("sample_quality") for r in results}
        reasons.discard(None)
        return ("not computed" + (f" ({_one_line(' / '.join(sorted(reasons)), 200)})"
                                  if reasons else ""))
    parts = []
    for name, row in names.items():
        text = f"`{name}` ({row.get('sample_quality.feature_dim')}-d"
        accuracy = _number(row.get("sample_quality.feature_test_accuracy"))
        if accuracy is not None:
            text += f", test accuracy {100 * accuracy:.1f} %"
        text += (f"), {row.get('sample_quality.n')} generated vs "
                 f"{row.get('sample_quality.n_reference')} test images, "
                 f"k={row.get('sample_quality.k')} for precision / recall")
        parts.append(text)
    return "; ".join(parts)


def render_report(results: list[dict[str, Any]], config: dict[str, Any] | None = None,
                  figures: dict[str, list[tuple[str, str]]] | None = None,
                  generated: str | None = None) -> str:
    """The text of ``report.md`` for ``results`` (``result.json`` contents); ``figures``
    maps a dataset to (title, relative path) pairs to link."""
    results = [review_result(r) for r in results]
    datasets, models = _order(results, config)
    rows = [result_row(r) for r in results]
    ok = sum(r.get("status") == "ok" for r in results)
    incomplete = sum(r.get("status") == "incomplete" for r in results)
    failed = len(results) - ok - incomplete
    total = sum(_number(r.get("seconds")) or 0.0 for r in results)
    training = sum(_number(r.get("train_seconds")) or 0.0 for r in results)
    generated = generated or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    counts = f"{ok} ok, " + (f"{incomplete} incomplete, " if incomplete else "") + \
        f"{failed} failed"
    lines = [
        "# vaebench benchmark", "",
        f"Generated {generated} from {len(results)} runs ({counts}): "
        f"{len(datasets)} dataset(s), {len(models)} model(s), seeds "
        f"{', '.join(map(str, sorted({r['seed'] for r in results})))}.", "",
        "- **Hardware**: " + "; ".join(_hardware_lines(results)),
        f"- **Total time**: {total:.1f} s summed over the runs ({training:.1f} s training, "
        "the rest evaluation and figures)",
        "- **Budget**: " + "; ".join(_budget_lines(results)),
        "- **Feature network** (FID / precision / recall): " + "; ".join(
            f"{d}: {_feature_line([r for r in rows if r['dataset'] == d], [r for r in results if r['dataset'] == d])}"  # noqa: E501
            for d in datasets),
        "",
        "Cells are mean ± sample standard deviation over the ok (and incomplete) runs "
        "(seeds) of a model; `(n=k)` when only k of them have the value. An incomplete run "
        "says ok but lacks values; each missing one is left out. ↑ higher is better, ↓ "
        "lower is better; "
        "the best mean of each column is in **bold** (none when every model has the same). "
        "The test loss is each model's own "
        "objective (with its own weights), so it compares models only with the same "
        "objective; ELBO and log p(x) (nats per sample, importance-sampled) compare every "
        "model with a likelihood. A model given the labels (such as `cvae`) has log p(x∣y) and its "
        "ELBO(x∣y) instead, in columns of their own: they are not comparable with log p(x). "
        "The linear probe and k-NN read each model's posterior mean, flattened to `probe dim` "
        "numbers (a spatial code grid gives many more than a vector code), so a larger code "
        "has more to read from. See docs/benchmark.md for every column.",
    ]
    for dataset in datasets:
        mine = [r for r in rows if r["dataset"] == dataset]
        source = [r for r in results if r["dataset"] == dataset]
        lines += ["", f"## {dataset}", "", markdown_table(mine, models), ""]
        by_sampler = sampler_table(mine, models)
        if by_sampler:
            lines += ["**Sample quality per sampler**: FID of the same number of draws "
                      "(`n_fid`) from each sampler that serves the model, fitted on its "
                      "training codes where it needs fitting (the table above shows the "
                      "model's own); bold: the best sampler of each model. Precision and "
                      "recall per sampler are in results.csv.", "", by_sampler, ""]
        failed = [r for r in source if r.get("status") not in SHOWN]
        if failed:
            lines += ["**Failed runs**", ""]
            lines += [f"- `{r['model']}` seed {r['seed']}: {_one_line(r.get('error'))}"
                      for r in failed]
            lines.append("")
        incomplete = [r for r in source if r.get("status") == "incomplete"]
        if incomplete:
            lines += ["**Incomplete runs** (they say ok; the values named are missing from "
                      "the table and its means)", ""]
            lines += [f"- `{r['model']}` seed {r['seed']}: {_one_line(r.get('note'), 600)}"
                      for r in incomplete]
            lines.append("")
        errors = [(r, group, message) for r in source
                  for group, message in (r.get("metric_errors") or {}).items()]
        if errors:
            lines += ["**Metric errors** (the run itself is ok)", ""]
            lines += [f"- `{r['model']}` seed {r['seed']}, {group}: {_one_line(message)}"
                      for r, group, message in errors]
            lines.append("")
        skipped: dict[tuple[str, str], list[str]] = {}
        for r in source:
            for group, reason in (r.get("not_applicable") or {}).items():
                names = skipped.setdefault((group, _one_line(reason, 160)), [])
                if r["model"] not in names:
                    names.append(r["model"])
        for r in source:
            note = (r.get("figures") or {}).get("traversal")
            if isinstance(note, str) and r["seed"] == min(x["seed"] for x in source
                                                          if x["model"] == r["model"]):
                reason = _one_line(note.removeprefix("skipped: "), 160)
                names = skipped.setdefault(("latent traversal", reason), [])
                names.append(r["model"])
        if skipped:
            models = {r["model"] for r in source}
            lines += ["Not applicable: " + "; ".join(
                f"{group} for {_model_list(names, models)} ({reason})"
                for (group, reason), names in skipped.items()), ""]
        links = (figures or {}).get(dataset, [])
        bars = [(title, path) for title, path in links if title.startswith("bar chart")]
        for title, path in links:
            if (title, path) not in bars:
                lines += [f"![{title}]({path})", ""]
        if bars:
            lines += ["Bar charts (mean, error bar one standard deviation over seeds): " +
                      ", ".join(f"[{title.removeprefix('bar chart: ')}]({path})"
                                for title, path in bars), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(output: str | Path, config: Any = None, *, figures: bool = True) -> Path:
    """Regenerate ``results.json``, ``results.csv``, ``report.md`` and (``figures=True``)
    ``figures/`` from the ``result.json`` files under ``output``; returns report.md's path.

    ``config``: the :class:`BenchmarkConfig` (or its dict) whose order of datasets and models
    the tables follow; by default ``output/benchmark.json`` if present.
    """
    output = Path(output)
    results = collect_results(output)
    if not results:
        raise FileNotFoundError(f"no results under {output / 'runs'}: run the benchmark first")
    if config is None:
        try:
            config = json.loads((output / "benchmark.json").read_text())
        except (OSError, ValueError):
            config = None
    elif hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, dict):
        config = None
    datasets, models = _order(results, config)
    rank_d = {d: i for i, d in enumerate(datasets)}
    rank_m = {m: i for i, m in enumerate(models)}
    results.sort(key=lambda r: (rank_d[r["dataset"]], rank_m[r["model"]], r["seed"]))
    rows = [result_row(r) for r in results]
    write_json(output / "results.json", rows)
    text = _csv_text(rows)
    atomic_write(output / "results.csv", lambda handle: handle.write(text), binary=False)
    made = make_figures(output, results, models) if figures else {}
    report = render_report(results, config, made)
    path = output / "report.md"
    atomic_write(path, lambda handle: handle.write(report), binary=False)
    return path


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")


def make_figures(output: str | Path, results: list[dict[str, Any]],
                 models: list[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """Write ``figures/{dataset}/*.png``; returns, per dataset, (title, path relative to
    ``output``) of each figure made. A figure that cannot be made is skipped with a
    warning."""
    from vaebench.benchmark.runner import FIGURES_FILE
    from vaebench.serialization import load_tensors

    output = Path(output)
    made: dict[str, list[tuple[str, str]]] = {}
    datasets, order = _order(results, {"models": models} if models else None)
    for dataset in datasets:
        mine = [r for r in results if r["dataset"] == dataset]
        folder = output / "figures" / dataset
        links = made.setdefault(dataset, [])

        def add(title: str, path: Path, links=links) -> None:
            links.append((title, path.relative_to(output).as_posix()))

        images: dict[str, tuple[int, dict[str, Any]]] = {}  # model -> (seed, tensors)
        for result in sorted(mine, key=lambda r: r["seed"]):
            if result.get("status") not in SHOWN or result["model"] in images:
                continue
            path = output / "runs" / dataset / result["model"] / f"seed{result['seed']}" / \
                FIGURES_FILE
            if path.is_file():
                try:
                    images[result["model"]] = (result["seed"], load_tensors(path))
                except ValueError as err:
                    warnings.warn(f"vaebench: {err}", RuntimeWarning, stacklevel=2)
        names = [m for m in order if m in images]
        jobs = []
        if names:
            first = images[names[0]][1]
            if "originals" in first:
                rows = [("data", first["originals"])] + [
                    (f"{m} (seed {images[m][0]})", images[m][1]["reconstructions"])
                    for m in names if "reconstructions" in images[m][1]]
                jobs.append(("reconstructions (first row: test images)",
                             folder / "reconstructions.png", rows, 8))
            rows = [(f"{m} (seed {images[m][0]})", images[m][1]["samples"]) for m in names
                    if "samples" in images[m][1]]
            if rows:
                jobs.append(("samples", folder / "samples.png", rows, 8))
        for title, path, image_rows, ncol in jobs:
            try:
                _image_rows(image_rows, f"{dataset}: {title}", path, ncol)
                add(title, path)
            except Exception as err:  # a figure must never lose the report
                warnings.warn(f"vaebench: figure {path} failed: {err}", RuntimeWarning,
                              stacklevel=2)
        for model in names:
            seed, tensors = images[model]
            note = next(((r.get("figures") or {}).get("traversal") for r in mine
                         if r["model"] == model and r["seed"] == seed), None)
            if "traversal" not in tensors or not isinstance(note, dict):
                continue
            path = folder / f"traversal_{_slug(model)}.png"
            try:
                _traversal(tensors["traversal"], note, f"{dataset}: {model} (seed {seed}) "
                           f"latent traversal over {note.get('range')}", path)
                add(f"latent traversal: {model}", path)
            except Exception as err:
                warnings.warn(f"vaebench: figure {path} failed: {err}", RuntimeWarning,
                              stacklevel=2)
        rows = [result_row(r) for r in mine]
        names = sampler_names(rows)
        if names:
            path = folder / "fid_by_sampler.png"
            try:
                _sampler_chart(rows, [m for m in order if any(r["model"] == m for r in rows)],
                               names, f"{dataset}: FID by sampler (lower is better)", path)
                add("FID by sampler", path)
            except Exception as err:
                warnings.warn(f"vaebench: figure {path} failed: {err}", RuntimeWarning,
                              stacklevel=2)
        for column in _columns(rows):
            if column.better is None:
                continue
            path = folder / f"bar_{_slug(column.key)}.png"
            try:
                _bar_chart(rows, column, [m for m in order if any(r["model"] == m
                                                                  for r in rows)],
                           f"{dataset}: {column.label} ({column.better} is better)", path)
                add(f"bar chart: {column.label}", path)
            except Exception as err:
                warnings.warn(f"vaebench: figure {path} failed: {err}", RuntimeWarning,
                              stacklevel=2)
    return made


def _image_rows(rows: list[tuple[str, Any]], title: str, path: Path, ncol: int) -> None:
    """One labelled band of images per (name, uint8 N x C x H x W) pair."""
    from vaebench.viz import image_rows_figure, save_figure

    save_figure(image_rows_figure([(name, images.float() / 255) for name, images in rows],
                                  ncol, title), path)


def _traversal(images, note: dict[str, Any], title: str, path: Path) -> None:
    from vaebench.viz import image_grid, pyplot, save_figure

    plt = pyplot()
    steps = int(note.get("steps") or 7)
    dims = note.get("dims") or []
    array = image_grid(images.float() / 255, ncol=steps)
    height = images.shape[-2]
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * steps, 0.6 + 0.6 * max(len(dims), 1)))
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")
    pad = 2
    ax.set_yticks([pad + i * (height + pad) + height / 2 for i in range(len(dims))])
    ax.set_yticklabels([f"z{d}" for d in dims], fontsize=8)
    ax.set_xticks([])
    ax.set_xlabel("value of the dimension: low → high", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def _bar_chart(rows: list[dict[str, Any]], column: Column, models: list[str], title: str,
               path: Path) -> None:
    from vaebench.viz import pyplot, save_figure

    plt = pyplot()
    means, errors, labels = [], [], []
    for model in models:
        summary = summarize([r for r in rows if r["model"] == model], column.key)
        labels.append(model)
        if summary is None:
            means.append(0.0)
            errors.append(0.0)
        else:
            means.append(summary[0])
            errors.append(0.0 if math.isnan(summary[1]) else summary[1])
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(models), 3.6))
    positions = list(range(len(models)))
    bars = ax.bar(positions, means, yerr=errors, capsize=4, color="#4c72b0")
    for position, model, bar in zip(positions, models, bars, strict=True):
        if summarize([r for r in rows if r["model"] == model], column.key) is None:
            bar.set_visible(False)
            ax.text(position, 0, "n/a", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(positions)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(column.label)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def _sampler_chart(rows: list[dict[str, Any]], models: list[str], names: list[str],
                   title: str, path: Path) -> None:
    """Grouped bars: for each model, the mean FID of each sampler (error bar: one std)."""
    from vaebench.viz import pyplot, save_figure

    plt = pyplot()
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(models), 3.8))
    for index, name in enumerate(names):
        summaries = [summarize([r for r in rows if r["model"] == m and
                                r.get("status") in SHOWN], f"{BY_SAMPLER}{name}.fid")
                     for m in models]
        positions = [i + (index - (len(names) - 1) / 2) * width for i in range(len(models))]
        means = [s[0] if s else math.nan for s in summaries]
        errors = [0.0 if not s or math.isnan(s[1]) else s[1] for s in summaries]
        ax.bar(positions, means, width, yerr=errors, capsize=2, label=name)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")  # FIDs of a model's samplers often differ by an order of magnitude
    ax.set_ylabel("FID (log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(names), 4))
    fig.tight_layout()
    save_figure(fig, path)
