"""Tables in `vaebench benchmark` and `vaebench train --mode-specific`."""

import csv
import json
import math
import shutil

import pytest
import torch

from vaebench import load_model
from vaebench.benchmark import BenchmarkConfig, render_report
from vaebench.cli import main
from vaebench.data import load_train_test
from vaebench.data.table_datasets import load_bundled_table, synthetic_mixed
from vaebench.data.tables import likelihood_fields, read_table, write_table

# Tiny budget: wine (161 training rows, 17 held out), two epochs, 200 rows per sampler.
TINY = ["--dataset", "wine", "--seeds", "1", "--epochs", "2", "--latent-dim", "4",
        "--iwae-k", "8", "--n-fid", "200"]
WINE_COLUMNS = list(load_bundled_table("wine").columns)


def _results(folder):
    return {p.parent.parent.name: json.loads(p.read_text())
            for p in sorted(folder.glob("runs/*/*/seed*/result.json"))}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """vae and ae on wine, one seed, through the command line (shared, read-only)."""
    out = tmp_path_factory.mktemp("tables") / "out"
    torch.set_num_threads(1)
    assert main(["benchmark", "--models", "vae,ae", *TINY, "--output", str(out)]) == 0
    return out


def _finite(values):
    return all(isinstance(v, float) and math.isfinite(v) for v in values)


def test_a_table_is_scored_as_a_table(bench):
    results = _results(bench)
    assert sorted(results) == ["ae", "vae"]
    for result in results.values():
        assert result["status"] == "ok" and result["metric_errors"] == {}
        assert result["model_likelihood"]["likelihood"] == "mixed"
        metrics = result["metrics"]
        assert sorted(metrics["reconstruction"]["column_nll"]) == sorted(WINE_COLUMNS)
        assert _finite(metrics["reconstruction"]["column_nll"].values())
        quality = metrics["sample_quality"]
        figures = ("column_shapes", "column_pair_trends", "ml_f1", "ml_real_f1", "dcr",
                   "dcr_holdout", "copies", "privacy")
        assert _finite(quality[key] for key in figures)
        assert quality["target"] == "target" and quality["n"] == 200
        assert list(quality["by_sampler"]) == list(result["samplers"]) == ["normal", "gmm"]
        assert quality["by_sampler"]["normal"]["column_shapes"] == quality["column_shapes"]
        assert "fid" not in quality and "images" in result["not_applicable"]["fid"]
        assert result["figures"] == {"skipped": "the data are not images"}
    likelihood = results["vae"]["metrics"]["likelihood"]
    assert _finite([likelihood["elbo"], likelihood["log_likelihood"]])
    assert "likelihood" in results["ae"]["not_applicable"]


def test_the_report_shows_the_table_metrics_with_their_directions(bench):
    report = (bench / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| model | ok"))
    cells = [cell.strip() for cell in header.split("|")]
    for label in ("log p(x) K=8 ↑", "column shapes ↑", "pair trends ↑", "ML F1 ↑", "DCR",
                  "DCR held-out", "copies ↓", "privacy ↑"):
        assert label in cells, label
    assert not any(cell.startswith("FID") for cell in cells)
    assert "fid for every model" in report and "ML efficacy of `target`" in report
    assert "| `vae` | `normal` |" in report  # column shapes per sampler
    assert (bench / "figures" / "wine" / "column_shapes_by_sampler.png").is_file()
    with (bench / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {"sample_quality.column_shapes", "sample_quality.dcr",
            "reconstruction.column_nll.alcohol"} <= set(rows[0])
    assert "sample_quality.fid" not in rows[0]


def test_every_dataset_lists_the_models_in_the_configured_order(bench):
    results = list(_results(bench).values())
    results += [{**result, "dataset": "wine_again"} for result in results]
    report = render_report(results, {"models": ["vae", "ae"],
                                     "datasets": ["wine", "wine_again"]})
    for section in report.split("\n## ")[1:]:
        models = [line.split("|")[1].strip() for line in section.splitlines()
                  if line.startswith("| `")]
        assert models[:2] == ["`vae`", "`ae`"], section.splitlines()[0]


def test_resuming_skips_the_finished_table_runs(bench, tmp_path, capsys):
    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    before = _results(copy)
    capsys.readouterr()
    assert main(["benchmark", "--models", "vae,ae", *TINY, "--output", str(copy)]) == 0
    assert capsys.readouterr().out.count("skipping, done") == 2
    assert _results(copy) == before


def test_mode_specific_is_a_setting_of_table_runs_only():
    config = BenchmarkConfig(models=["vae"], datasets=["wine", "digits"], mode_specific=True)
    assert config.run_config("wine", "vae", 0)["mode_specific"] is True
    assert "mode_specific" not in config.run_config("digits", "vae", 0)


def test_a_table_file_benchmarks_with_mode_specific_columns(tmp_path):
    write_table(synthetic_mixed(200), tmp_path / "people.csv")
    out = tmp_path / "out"
    assert main(["benchmark", "--dataset", str(tmp_path / "people.csv"), "--models", "vae",
                 "--seeds", "1", "--epochs", "1", "--latent-dim", "3", "--samplers", "normal",
                 "--metrics", "loss,sample_quality", "--n-fid", "100", "--mode-specific",
                 "--output", str(out)]) == 0
    result = _results(out)["vae"]
    assert result["status"] == "ok" and result["dataset"] == "people"
    assert result["config"]["mode_specific"] is True
    assert "ml_f1" not in result["metrics"]["sample_quality"]
    assert "no target column" in result["not_applicable"]["ml_efficacy"]
    model = load_model(out / "runs" / "people" / "vae" / "seed0" / "model")
    height = model.likelihood.table.columns[0]
    assert height.name == "height" and height.mode_means


def test_the_cli_and_the_benchmark_choose_the_same_likelihood(bench, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "wine", "--model", "vae", "--latent-dim", "4",
                 "--epochs", "1", "--iwae-k", "2", "--output", str(out), "--no-progress"]) == 0
    trained = load_model(out / "model").config
    benched = load_model(bench / "runs" / "wine" / "vae" / "seed0" / "model").config
    train, _ = load_train_test("wine")
    chosen = likelihood_fields(train)
    for config in (trained, benched):
        assert {key: getattr(config, key) for key in chosen} == chosen
    assert chosen["likelihood"] == "mixed" and chosen["likelihood_kwargs"]["table"]
    with pytest.raises(ValueError, match="'mixed' likelihood"):
        likelihood_fields(train, "gaussian")
    digits, _ = load_train_test("digits")
    assert likelihood_fields(digits) == {"likelihood": "gaussian", "sigma": "data",
                                         "likelihood_kwargs": {}}


def test_train_with_mode_specific_columns_samples_the_original_columns(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "wine", "--mode-specific", "--model", "vae",
                 "--latent-dim", "2", "--epochs", "1", "--iwae-k", "2", "--output", str(out),
                 "--no-progress"]) == 0
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["training_data"]["mode_specific"] is True
    columns = {c["name"]: c for c in saved["config"]["likelihood_kwargs"]["table"]["columns"]}
    assert columns["alcohol"]["kind"] == "numeric" and columns["alcohol"]["mode_means"]
    assert "mode_means" not in columns["target"]  # a category keeps its one-hot block
    assert main(["sample", "--model", str(out / "model"), "-n", "20",
                 "--output", str(tmp_path / "rows.csv")]) == 0
    rows = read_table(tmp_path / "rows.csv")
    assert list(rows.columns) == WINE_COLUMNS and len(rows) == 20
    capsys.readouterr()
    assert main(["train", "--dataset", "digits", "--mode-specific", "--output",
                 str(tmp_path / "images")]) == 2
    assert "not a table" in capsys.readouterr().err
