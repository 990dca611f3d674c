import csv
import json
import math
import re
import shutil
import statistics
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from vaebench import load_model
from vaebench.benchmark import (
    BenchmarkConfig,
    NotApplicable,
    latent_traversal,
    markdown_table,
    paired_table,
    render_report,
    result_row,
    run_benchmark,
    sampler_names,
    sampler_table,
    write_report,
)
from vaebench.benchmark import runner as runner_module
from vaebench.benchmark.report import format_mean_std
from vaebench.cli import main
from vaebench.data import ArrayData
from vaebench.models import create_model
from vaebench.samplers import load_sampler

# Tiny budget: 300 digits (8 x 8), one epoch, 64 samples for FID, K=10 for log p(x).
TINY = ["--dataset", "digits", "--epochs", "1", "--train-size", "300", "--latent-dim", "4",
        "--likelihood", "bernoulli", "--n-fid", "64", "--iwae-k", "10"]


def _results(folder):
    return {(p.parent.parent.name, p.parent.name): json.loads(p.read_text())
            for p in sorted(folder.glob("runs/*/*/seed*/result.json"))}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """vae and ae on digits, 2 seeds each, through the command line (shared, read-only)."""
    out = tmp_path_factory.mktemp("bench") / "out"
    torch.set_num_threads(1)
    code = main(["benchmark", "--models", "vae,ae", "--seeds", "2", *TINY,
                 "--output", str(out)])
    assert code == 0
    return out


@pytest.fixture
def bench_copy(bench, tmp_path):
    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    return copy


def test_benchmark_writes_runs_tables_and_figures(bench):
    results = _results(bench)
    assert sorted(results) == [("ae", "seed0"), ("ae", "seed1"), ("vae", "seed0"),
                               ("vae", "seed1")]
    for result in results.values():
        assert result["status"] == "ok" and result["error"] is None
        assert result["config"]["epochs"] == 1 and result["n_train"] == 300
        assert result["metric_errors"] == {}
        assert math.isfinite(result["metrics"]["sample_quality"]["fid"])
        assert result["metrics"]["sample_quality"]["n"] == 64
        assert result["metrics"]["sample_quality"]["features"] == "classifier-digits-v2"
        assert 0 <= result["metrics"]["representation"]["linear_probe"] <= 1
        assert result["not_applicable"]["disentanglement"]
        by_sampler = result["metrics"]["sample_quality"]["by_sampler"]
        assert list(result["samplers"]) == list(by_sampler) == ["normal", "gmm"]
        assert by_sampler["normal"]["fid"] == result["metrics"]["sample_quality"]["fid"]
        assert by_sampler["gmm"]["fid"] != by_sampler["normal"]["fid"]
    # every sampler is saved beside the model, fitted for its weights
    model_dir = bench / "runs" / "digits" / "vae" / "seed0" / "model"
    model = load_model(model_dir)
    assert load_sampler(model_dir, "gmm", model).generate(model, 4).shape == (4, 1, 8, 8)
    # a likelihood for the VAE only; the K=10 estimate is at least the ELBO (up to noise)
    vae = results[("vae", "seed0")]["metrics"]["likelihood"]
    assert vae["k"] == 10 and vae["log_likelihood"] >= vae["elbo"] - 0.5
    assert "likelihood" not in results[("ae", "seed0")]["metrics"]
    assert "deterministic" in results[("ae", "seed0")]["not_applicable"]["likelihood"]
    # the seed matters: different weights, different figures
    assert results[("vae", "seed0")]["metrics"]["reconstruction"]["mse"] != \
        results[("vae", "seed1")]["metrics"]["reconstruction"]["mse"]

    with (bench / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert {"dataset", "model", "seed", "status", "error", "seconds", "reconstruction.mse",
            "likelihood.elbo", "sample_quality.fid", "config.epochs"} <= set(rows[0])
    assert [r["model"] for r in rows] == ["vae", "vae", "ae", "ae"]  # configured order
    assert rows[2]["likelihood.elbo"] == ""  # the AE has none
    rows_json = json.loads((bench / "results.json").read_text())
    assert len(rows_json) == 4 and rows_json[0]["config"]["model"] == "vae"

    report = (bench / "report.md").read_text()
    assert "## digits" in report and "| `vae` | 2/2 |" in report and "| `ae` | 2/2 |" in report
    assert "±" in report and "classifier-digits-v2" in report and "test accuracy" in report
    assert "torch" in report and "Total time" in report and "`epochs` 1" in report
    # the better MSE mean is the bold one
    mse = {m: sum(results[(m, s)]["metrics"]["reconstruction"]["mse"]
                  for s in ("seed0", "seed1")) / 2 for m in ("vae", "ae")}
    best = min(mse, key=mse.get)
    main_table = report.split("**Seed by seed against `vae`**")[0]
    assert "**Sample quality per sampler**" in report.split("## digits")[1]
    table = {line.split("|")[1].strip(): line for line in main_table.splitlines()
             if line.startswith("| `")}
    header = next(line for line in report.splitlines() if line.startswith("| model"))
    column = [c.strip() for c in header.split("|")].index("MSE/dim ↓")
    assert table[f"`{best}`"].split("|")[column].strip().startswith("**")
    other = ({"vae", "ae"} - {best}).pop()
    assert not table[f"`{other}`"].split("|")[column].strip().startswith("**")
    assert "**Sample quality per sampler**" in report and "| `vae` | `normal` |" in report
    for name in ("reconstructions.png", "samples.png", "traversal_vae.png", "traversal_ae.png",
                 "bar_reconstruction_mse.png", "bar_sample_quality_fid.png",
                 "fid_by_sampler.png"):
        assert (bench / "figures" / "digits" / name).is_file(), name
        assert f"figures/digits/{name}" in report


def test_resume_skips_finished_runs_and_redoes_deleted_ones(bench_copy, capsys):
    before = _results(bench_copy)
    stamps = {p: p.stat().st_mtime_ns for p in bench_copy.glob("runs/*/*/*/result.json")}
    shutil.rmtree(bench_copy / "runs" / "digits" / "ae" / "seed1")
    assert main(["benchmark", "--models", "vae,ae", "--seeds", "2", *TINY,
                 "--output", str(bench_copy)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipping, done") == 3
    assert re.search(r"\[4/4\] digits ae seed 1 \.\.\. done in [\d.]+ s \(eval loss", out)
    for path, stamp in stamps.items():
        if "ae/seed1" not in path.as_posix():
            assert path.stat().st_mtime_ns == stamp  # not rewritten
    after = _results(bench_copy)
    # seeded: the redone run reproduces its figures exactly
    assert after[("ae", "seed1")]["metrics"]["reconstruction"] == \
        before[("ae", "seed1")]["metrics"]["reconstruction"]
    assert len(list(csv.DictReader((bench_copy / "results.csv").open()))) == 4


def test_changed_settings_and_failed_runs_are_run_again(bench_copy, monkeypatch, capsys):
    calls = []

    def fake_run_one(config, run, context=None):
        calls.append((run.model, run.seed))
        return {"dataset": run.key, "model": run.model, "seed": run.seed, "status": "ok",
                "seconds": 0.0, "metrics": {}, "metric_errors": {}, "error": None}

    monkeypatch.setattr(runner_module, "run_one", fake_run_one)
    base = dict(models=["vae", "ae"], datasets=["digits"], seeds=2, epochs=1, train_size=300,
                latent_dim=4, likelihood="bernoulli", n_fid=64, iwae_k=10,
                output=str(bench_copy))
    run_benchmark(BenchmarkConfig(**base), report=False)
    assert calls == []  # everything done with these settings
    run_benchmark(BenchmarkConfig(**{**base, "epochs": 2}), report=False)
    assert len(calls) == 4 and "settings changed" in capsys.readouterr().out
    # a failed run is skipped unless retry_failed
    path = bench_copy / "runs" / "digits" / "vae" / "seed0" / "result.json"
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "status": "failed", "error": "boom"}))
    calls.clear()
    run_benchmark(BenchmarkConfig(**base), report=False)
    assert calls == [] and "failed before (boom)" in capsys.readouterr().out
    run_benchmark(BenchmarkConfig(**base), retry_failed=True, report=False)
    assert calls == [("vae", 0)]


def test_a_failing_model_is_reported_and_the_others_complete(tmp_path, capsys):
    settings = tmp_path / "bench.json"
    settings.write_text(json.dumps({
        "models": ["vae", "ae"], "datasets": ["digits"], "seeds": 1, "epochs": 1,
        "train_size": 200, "metrics": ["loss", "reconstruction"],
        # sigma = 1e-30: 1 / sigma^2 overflows, the loss becomes NaN in the first epoch
        "model_options": {"vae": {"sigma": 1e-30}}}))
    out = tmp_path / "out"
    assert main(["benchmark", "--config", str(settings), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[1/2] digits vae seed 0 ... FAILED" in printed and "TrainingDiverged" in printed
    results = _results(out)
    failed, ok = results[("vae", "seed0")], results[("ae", "seed0")]
    assert failed["status"] == "failed"
    assert failed["error"].startswith("TrainingDiverged: training of vae diverged")
    assert "trainer.py" in failed["traceback"] and failed["config"]["model_options"] == {
        "sigma": 1e-30}
    assert ok["status"] == "ok" and set(ok["metrics"]) == {"loss", "reconstruction"}
    report = (out / "report.md").read_text()
    assert "**Failed runs**" in report and "- `vae` seed 0: TrainingDiverged" in report
    assert "| `vae` | 0/1 | failed |" in report
    # not retried without --retry-failed
    assert main(["benchmark", "--config", str(settings), "--output", str(out)]) == 0
    assert "skipping, failed before" in capsys.readouterr().out


def test_an_interrupted_benchmark_resumes(tmp_path, monkeypatch, capsys):
    real_run_one = runner_module.run_one
    calls = []

    def interrupt_second(config, run, context=None):
        calls.append(run.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_one(config, run, context)

    monkeypatch.setattr(runner_module, "run_one", interrupt_second)
    args = ["benchmark", "--models", "ae", "--dataset", "digits", "--seeds", "2", "--epochs",
            "1", "--train-size", "100", "--metrics", "loss", "--output", str(tmp_path)]
    assert main(args) == 130
    assert "interrupted in run 2 of 2" in capsys.readouterr().out
    assert [p.parent.name for p in tmp_path.glob("runs/*/*/*/result.json")] == ["seed0"]
    assert not (tmp_path / "report.md").exists()
    monkeypatch.setattr(runner_module, "run_one", real_run_one)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[1/2] digits ae seed 0 ... skipping, done" in out
    assert "[2/2] digits ae seed 1 ... done" in out


def test_a_failing_metric_is_recorded_and_the_run_is_ok(tmp_path, monkeypatch):
    import vaebench.metrics

    def broken(*args, **kwargs):
        raise RuntimeError("metric exploded")

    monkeypatch.setattr(vaebench.metrics, "reconstruction_error", broken)
    config = BenchmarkConfig(models=["ae"], datasets=["digits"], seeds=1, epochs=1,
                             train_size=200, metrics=["loss", "reconstruction"],
                             output=str(tmp_path))
    (result,) = run_benchmark(config)
    assert result["status"] == "ok" and "loss" in result["metrics"]
    assert result["metric_errors"] == {"reconstruction": "RuntimeError: metric exploded"}
    assert "reconstruction: RuntimeError: metric exploded" in (tmp_path / "report.md").read_text()


def _synthetic(model, seed, status="ok", **metrics):
    groups = {}
    for key, value in metrics.items():  # group__name, or group__a__b__name when nested
        *path, name = key.split("__")
        level = groups
        for part in path:
            level = level.setdefault(part, {})
        level[name] = value
    return {"dataset": "toy", "model": model, "seed": seed, "status": status,
            "error": None if status == "ok" else "ValueError: diverged", "seconds": 1.0,
            "train_seconds": 0.5, "metrics": groups if status == "ok" else {},
            "metric_errors": {}, "not_applicable": {}, "config": {"epochs": 3}}


def test_report_formatting_marks_the_best_value_per_direction():
    results = [
        _synthetic("a", 0, reconstruction__mse=0.10, likelihood__elbo=-100.0),
        _synthetic("a", 1, reconstruction__mse=0.12, likelihood__elbo=-102.0),
        _synthetic("b", 0, reconstruction__mse=0.05, likelihood__elbo=-110.0),
        _synthetic("b", 1, reconstruction__mse=0.07),  # its ELBO is missing: n=1
        _synthetic("c", 0, status="failed"),
    ]
    rows = [result_row(r) for r in results]
    table = markdown_table(rows, ["a", "b", "c"]).splitlines()
    assert table[0] == ("| model | ok runs | MSE/dim ↓ | ELBO ↑ | train s |")
    a, b, c = table[2:]
    # MSE: lower is better -> b; ELBO: higher is better -> a
    assert a == "| `a` | 2/2 | 0.1100 ± 0.0141 | **-101.0 ± 1.4** | 0.5000 ± 0.0000 |"
    assert b == "| `b` | 2/2 | **0.0600 ± 0.0141** | -110.0 (n=1) | 0.5000 ± 0.0000 |"
    assert c == "| `c` | 0/1 | failed | failed | failed |"
    report = render_report(results, {"models": ["a", "b", "c"]}, generated="today")
    assert report.startswith("# vaebench benchmark\n\nGenerated today from 5 runs (4 ok, 1 "
                             "failed)")
    assert "- `c` seed 0: ValueError: diverged" in report and "`epochs` 3" in report
    # ties for the best are all bold; a single model is not ranked
    tie = [result_row(_synthetic(m, 0, reconstruction__mse=mse))
           for m, mse in (("a", 0.5), ("b", 0.5), ("c", 0.7))]
    assert markdown_table(tie).count("**0.5000**") == 2
    assert "**" not in markdown_table(tie[:1])


def test_the_sampler_table_bolds_the_best_sampler_of_each_model():
    results = [_synthetic(model, seed, **{f"sample_quality__by_sampler__{name}__fid": fid
                                         for name, fid in fids.items()})
               for model, fids in (("vae", {"normal": 50.0, "gmm": 30.0}),
                                   ("vqvae", {"pixelcnn": 40.0}),
                                   ("ae", {"normal": 20.0, "gmm": 20.0}))
               for seed in (0, 1)]
    rows = [result_row(r) for r in results]
    assert sampler_names(rows) == ["normal", "gmm", "pixelcnn"]
    table = sampler_table(rows, ["vae", "vqvae", "ae"])
    lines = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert lines["`vae`"].split("|")[2:6] == [" `normal` ", " 50.00 ± 0.00 ", " **30.00 ± 0.00** ",
                                              " – "]
    assert "**" not in lines["`vqvae`"] and "`pixelcnn`" in lines["`vqvae`"]
    assert "**" not in lines["`ae`"]  # a tie: nothing stands out
    assert sampler_table([result_row(_synthetic("vae", 0))]) is None


def test_no_value_is_bold_when_every_model_has_the_same():
    rows = [result_row(_synthetic(m, s, sample_quality__precision=0.0,
                                  sample_quality__recall=0.0, reconstruction__mse=0.1 * s + 0.1))
            for m in ("a", "b", "c") for s in (0, 1)]
    table = markdown_table(rows)
    assert "**" not in table
    for model in ("a", "b", "c"):
        cells = _table(table, model)
        assert cells["precision ↑"] == cells["recall ↑"] == "0.0000 ± 0.0000"


def test_the_probe_dimension_of_each_model_is_stated():
    rows = [result_row(_synthetic("vae", 0, representation__linear_probe=0.8,
                                  representation__latent_dim=16)),
            result_row(_synthetic("vqvae", 0, representation__linear_probe=0.9,
                                  representation__latent_dim=784))]
    report = render_report([_synthetic("vae", 0)], generated="today")
    assert "`probe dim`" in report
    table = markdown_table(rows, ["vae", "vqvae"])
    assert _table(table, "vae")["probe dim"] == "16"
    assert _table(table, "vqvae")["probe dim"] == "784"
    assert "**784**" not in table and "**0.9000**" in table


def test_a_conditional_likelihood_is_reported_apart():
    results = [_synthetic("vae", 0, likelihood__log_likelihood=-100.0, likelihood__k=10),
               _synthetic("iwae", 0, likelihood__log_likelihood=-95.0, likelihood__k=10),
               _synthetic("cvae", 0, likelihood__log_likelihood=-80.0, likelihood__k=10)]
    rows = [result_row(r) for r in results]
    assert rows[2]["conditional_likelihood.log_likelihood"] == -80.0
    assert "likelihood.log_likelihood" not in rows[2]
    table = markdown_table(rows, ["vae", "iwae", "cvae"])
    cells = {model: _table(table, model) for model in ("vae", "iwae", "cvae")}
    assert cells["cvae"]["log p(x) K=10 ↑"] == "–"
    assert cells["cvae"]["log p(x∣y) K=10 ↑"] == "-80.00"
    assert cells["vae"]["log p(x∣y) K=10 ↑"] == "–"
    assert "**-95.00**" in table and "**-80.00**" not in table  # iwae best; cvae apart


def test_config_validation_names_the_field(tmp_path, capsys):
    def fails(field, **fields):
        with pytest.raises(ValidationError) as info:
            BenchmarkConfig(**{"models": ["vae"], **fields})
        text = str(info.value)
        assert field in text, text

    fails("models", models=["nope"])
    fails("models", models=[])
    fails("seeds", seeds=0)
    fails("seeds", seeds=[])
    fails("datasets", datasets=["no_such_data.npy"])
    fails("epochs", epochs=0)
    fails("metrics", metrics=["fid"])
    fails("features", features="vgg")
    fails("model_options.vae", model_options={"vae": {"no_such_field": 1}})
    fails("model_options", model_options={"beta_vea": {"beta": 4}})  # not a model
    fails("sampler_options.pixelcnn: epochs", sampler_options={"pixelcnn": {"epochs": 0}})
    fails("unknown sampler 'pixelcn'", sampler_options={"pixelcn": {}})
    fails("sigma", likelihood="bernoulli", sigma="optimal")
    assert BenchmarkConfig(models="vae, ae", seeds=[3, 5]).seed_list == [3, 5]
    assert main(["benchmark", "--models", "vae,nope", "--output", str(tmp_path)]) == 2
    assert "models" in capsys.readouterr().err
    assert main(["benchmark", "--models", "vae", "--seeds", "0", "--output",
                 str(tmp_path)]) == 2
    assert "seeds" in capsys.readouterr().err


def test_options_of_models_left_out_are_ignored_with_a_warning():
    reference = Path(__file__).parents[1] / "benchmarks" / "configs" / "mnist.json"
    with pytest.warns(UserWarning, match="model_options of disentangled_beta_vae ignored: "
                                         "not among the benchmarked models vae, vamp"):
        narrowed = BenchmarkConfig.from_file(reference, models="vae,vamp")
    assert narrowed.models == ["vae", "vamp"] and narrowed.model_options == {}
    with pytest.warns(UserWarning, match="beta_vae ignored"):
        kept = BenchmarkConfig(models=["vae", "vqvae"], model_options={
            "vqvae": {"num_codes": 32}, "beta_vae": {"beta": 4}})
    assert kept.model_options == {"vqvae": {"num_codes": 32}}
    with pytest.raises(ValidationError, match="'beta_vea', which is not a registered model"):
        BenchmarkConfig(models=["vae"], model_options={"beta_vea": {"beta": 4}})


def test_json_config_round_trip_and_overrides(tmp_path):
    config = BenchmarkConfig(models=["vae", "beta_vae"], datasets=["digits"], seeds=[0, 4],
                             epochs=2, model_options={"beta_vae": {"beta": 4}},
                             metrics=["reconstruction", "loss"], output=str(tmp_path / "b"))
    path = config.save(tmp_path / "bench.json")
    again = BenchmarkConfig.from_file(path)
    assert again == config and again.metrics == ["loss", "reconstruction"]  # canonical order
    changed = BenchmarkConfig.from_file(path, epochs=5, seeds=None,
                                        model_options={"beta_vae": {"latent_dim": 3}})
    assert changed.epochs == 5 and changed.seeds == [0, 4]
    assert changed.model_options == {"beta_vae": {"beta": 4, "latent_dim": 3}}
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping"):
        BenchmarkConfig.from_file(tmp_path / "bad.json")
    yaml_file = tmp_path / "bench.yaml"
    yaml_file.write_text("models: [vae]\nepochs: 3\n")
    try:
        import yaml  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="PyYAML"):
            BenchmarkConfig.from_file(yaml_file)
    else:
        assert BenchmarkConfig.from_file(yaml_file).epochs == 3


def test_report_only_regenerates_without_training(bench_copy, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("--report-only must not train")

    monkeypatch.setattr(runner_module, "run_one", no_training)
    for name in ("report.md", "results.csv", "results.json"):
        (bench_copy / name).unlink()
    shutil.rmtree(bench_copy / "figures")
    assert main(["benchmark", "--report-only", "--output", str(bench_copy)]) == 0
    assert "report.md" in capsys.readouterr().out
    report = (bench_copy / "report.md").read_text()
    assert "| `vae` | 2/2 |" in report and (bench_copy / "figures/digits/samples.png").is_file()
    assert len(json.loads((bench_copy / "results.json").read_text())) == 4
    assert main(["benchmark", "--report-only", "--output", str(bench_copy / "empty")]) == 2
    assert "no results" in capsys.readouterr().err


def test_latent_traversal():
    data = ArrayData(torch.rand(50, 1, 8, 8))
    vae = create_model("vae", input_dim=(1, 8, 8), latent_dim=3)
    images, info = latent_traversal(vae, data.take(slice(0, 1)), data, steps=5)
    assert images.shape == (15, 1, 8, 8) and sorted(info["dims"]) == [0, 1, 2]
    assert info["range"] == "[-3, 3]"
    ae = create_model("ae", input_dim=(1, 8, 8), latent_dim=2)
    assert latent_traversal(ae, data.take(slice(0, 1)), data)[1]["range"].startswith("observed")
    vq = create_model("vqvae", input_dim=(1, 8, 8), latent_dim=2)
    with pytest.raises(NotApplicable, match="quantized"):
        latent_traversal(vq, data.take(slice(0, 1)), data)


def test_reference_features_are_computed_once():
    from vaebench.benchmark.runner import CachingFeatures

    class Counting:
        name, dim, calls = "counting", 2, 0

        def __call__(self, images):
            self.calls += 1
            return torch.zeros(len(images), 2)

    network = Counting()
    features = CachingFeatures(network)
    reference = ArrayData(torch.rand(10, 1, 8, 8))
    for _ in range(3):
        assert features(reference).shape == (10, 2)
    assert network.calls == 1 and features.hits == 2
    features(ArrayData(reference.x + 0.5))  # other pixels, computed
    features(torch.rand(4, 1, 8, 8))  # generated images: never remembered
    features(torch.rand(4, 1, 8, 8))
    assert network.calls == 4


def test_dsprites_run_scores_disentanglement_and_sample_quality(tmp_path, monkeypatch):
    from vaebench.metrics import ClassifierFeatures

    small = ClassifierFeatures.for_dataset.__func__

    def quick(cls, dataset, **options):  # the default classifier trains for two minutes
        return small(cls, dataset, train_samples=1000, epochs=1, **options)

    monkeypatch.setattr(ClassifierFeatures, "for_dataset", classmethod(quick))
    config = BenchmarkConfig(models=["vae"], datasets=["dsprites"], seeds=1, epochs=1,
                             train_size=300, latent_dim=4, likelihood="bernoulli",
                             metrics=["sample_quality", "disentanglement"], n_fid=64,
                             dsprites_n=400, output=str(tmp_path))
    (result,) = run_benchmark(config)
    assert result["status"] == "ok" and result["metric_errors"] == {}
    quality = result["metrics"]["sample_quality"]
    assert quality["features"] == "classifier-dsprites-v2" and math.isfinite(quality["fid"])
    scores = result["metrics"]["disentanglement"]
    assert scores["n_train"] == 400 and scores["latent_dim"] == 4
    for key in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness",
                "sap", "factor_vae_score"):
        assert 0.0 <= scores[key] <= 1.0, key
    report = (tmp_path / "report.md").read_text()
    assert "MIG" in report and "classifier-dsprites-v2" in report


def test_a_conditional_model_is_not_probed_for_the_label_it_was_given():
    from vaebench.benchmark import evaluate_run
    from vaebench.benchmark.runner import Run

    torch.manual_seed(0)
    train = ArrayData(torch.rand(40, 1, 8, 8), torch.arange(40) % 4)
    test = ArrayData(torch.rand(20, 1, 8, 8), torch.arange(20) % 4)
    model = create_model("cvae", input_dim=(1, 8, 8), latent_dim=2, num_classes=4)
    config = BenchmarkConfig(models=["cvae"], datasets=["digits"], seeds=1,
                             metrics=["reconstruction", "representation"])
    metrics, errors, skipped = evaluate_run(config, Run("digits", "cvae", 0), model, train,
                                            test)
    assert errors == {} and "reconstruction" in metrics
    assert "the encoder is given the label" in skipped["representation"]


# --- malformed and incomplete result files ------------------------------------------------


def _bench_config(folder, **changes):
    """The settings of the ``bench`` fixture, writing to ``folder``."""
    return BenchmarkConfig(**{
        "models": ["vae", "ae"], "datasets": ["digits"], "seeds": 2, "epochs": 1,
        "train_size": 300, "latent_dim": 4, "likelihood": "bernoulli", "n_fid": 64,
        "iwae_k": 10, "output": str(folder), **changes})


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table(report, model):
    """The cells of ``model``'s row of the report's (single) table, by column label."""
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    row = next(line for line in lines if line.startswith(f"| `{model}` |"))
    return {label: cell.strip("*") for label, cell in zip(_cells(header), _cells(row),
                                                           strict=True)}


def _strict_json(path):
    """``path`` parsed as standard JSON (no NaN or Infinity tokens)."""
    def refuse(token):
        raise AssertionError(f"{path} holds {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


MALFORMED = {
    "garbage bytes": (lambda r: b"\x00\xff\xfe{ not json", "not JSON"),
    "cut short": (lambda r: json.dumps(r).encode()[:200], "not JSON"),
    "a list": (lambda r: json.dumps([r]).encode(), "a JSON list, not an object"),
    "no status": (lambda r: json.dumps({k: v for k, v in r.items() if k != "status"}).encode(),
                  'no "status"'),
    "unknown status": (lambda r: json.dumps({**r, "status": "done"}).encode(),
                       '"status" is "done"'),
    "no config": (lambda r: json.dumps({k: v for k, v in r.items() if k != "config"}).encode(),
                  'no "config"'),
    "metrics a list": (lambda r: json.dumps({**r, "metrics": [1.0]}).encode(),
                       '"metrics" is [1.0]'),
    "a metric group a number": (
        lambda r: json.dumps({**r, "metrics": {**r["metrics"], "reconstruction": 0.5}}).encode(),
        '"metrics" is {'),
    "seed a string": (lambda r: json.dumps({**r, "seed": "1"}).encode(), '"seed" is "1"'),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_result_file_is_reported_as_failed_and_run_again(bench_copy, kind, capsys):
    before = _results(bench_copy)
    path = bench_copy / "runs" / "digits" / "ae" / "seed1" / "result.json"
    corrupt, problem = MALFORMED[kind]
    path.write_bytes(corrupt(before[("ae", "seed1")]))
    stamps = {p: p.stat().st_mtime_ns for p in bench_copy.glob("runs/*/*/*/result.json")}

    assert main(["benchmark", "--report-only", "--output", str(bench_copy)]) == 0
    report = (bench_copy / "report.md").read_text()
    assert "(3 ok, 1 failed)" in report
    assert f"- `ae` seed 1: runs/digits/ae/seed1/result.json is malformed ({problem}" in report
    cells = _table(report, "ae")
    assert cells["ok runs"] == "1/2"
    mse = before[("ae", "seed0")]["metrics"]["reconstruction"]["mse"]  # the only ok seed
    assert cells["MSE/dim ↓"] == f"{mse:.4f}"
    rows = {(r["model"], r["seed"]): r for r in _strict_json(bench_copy / "results.json")}
    assert rows[("ae", 1)]["status"] == "failed" and "ae/seed1/result.json" in \
        rows[("ae", 1)]["error"]

    results = run_benchmark(_bench_config(bench_copy))
    out = capsys.readouterr().out
    assert f"[4/4] digits ae seed 1: its result.json is malformed ({problem}" in out
    assert out.count("skipping, done") == 3
    assert [r["status"] for r in results] == ["ok"] * 4
    for other, stamp in stamps.items():
        if other != path:
            assert other.stat().st_mtime_ns == stamp  # not rewritten
    redone = _results(bench_copy)[("ae", "seed1")]
    assert redone["status"] == "ok"
    assert redone["metrics"]["reconstruction"] == before[("ae", "seed1")]["metrics"][
        "reconstruction"]  # seeded: the same run again
    report = (bench_copy / "report.md").read_text()
    assert "malformed" not in report and _table(report, "ae")["ok runs"] == "2/2"


@pytest.mark.parametrize("value", [math.nan, math.inf, "abc", None, True])
def test_a_metric_value_that_is_not_a_number_is_left_out_of_the_means(bench_copy, value,
                                                                      monkeypatch):
    vae = bench_copy / "runs" / "digits" / "vae"
    # a third seed, so that the mean of the other seeds is a mean of two
    shutil.copytree(vae / "seed0", vae / "seed2")
    third = json.loads((vae / "seed2" / "result.json").read_text())
    third["seed"] = third["config"]["seed"] = 2
    third["metrics"]["reconstruction"]["mse"] *= 1.5
    third["metrics"]["reconstruction"]["sse"] *= 1.5
    (vae / "seed2" / "result.json").write_text(json.dumps(third))
    bad = json.loads((vae / "seed1" / "result.json").read_text())
    good = {seed: _results(bench_copy)[("vae", f"seed{seed}")]["metrics"]["reconstruction"]
            for seed in (0, 1, 2)}
    bad["metrics"]["reconstruction"]["mse"] = value
    (vae / "seed1" / "result.json").write_text(json.dumps(bad))  # NaN and inf as NaN, Infinity

    write_report(bench_copy, figures=False)
    report = (bench_copy / "report.md").read_text()
    assert "(4 ok, 1 incomplete, 0 failed)" in report
    assert (f"- `vae` seed 1: runs/digits/vae/seed1/result.json: reconstruction.mse is "
            f"{json.dumps(value)}, not a finite number") in report
    cells = _table(report, "vae")
    assert cells["ok runs"] == "2/3 (1 incomplete)"
    # MSE: seeds 0 and 2 only; SSE: all three (the incomplete run's other values count)
    mse = [good[0]["mse"], good[2]["mse"]]
    expected = format_mean_std(statistics.mean(mse), statistics.stdev(mse))
    assert cells["MSE/dim ↓"] == f"{expected} (n=2)"
    sse = [good[seed]["sse"] for seed in (0, 1, 2)]
    assert cells["SSE/sample ↓"] == format_mean_std(statistics.mean(sse), statistics.stdev(sse))
    rows = {(r["model"], r["seed"]): r for r in _strict_json(bench_copy / "results.json")}
    row = rows[("vae", 1)]
    assert row["status"] == "incomplete" and row["reconstruction.mse"] is None
    assert "reconstruction.mse" in row["note"] and row["reconstruction.sse"] == good[1]["sse"]

    calls = []
    monkeypatch.setattr(runner_module, "run_one",
                        lambda config, run, context=None: calls.append(run))
    run_benchmark(_bench_config(bench_copy), report=False)
    assert calls == []  # a rerun of the same seed would give the same value: kept


@pytest.mark.parametrize("dropped", [["sample_quality"], "all"])
def test_an_ok_result_without_its_metrics_is_incomplete_and_run_again(bench_copy, dropped,
                                                                       capsys):
    path = bench_copy / "runs" / "digits" / "vae" / "seed0" / "result.json"
    result = json.loads(path.read_text())
    dropped = list(result["metrics"]) if dropped == "all" else dropped
    result["metrics"] = {k: v for k, v in result["metrics"].items() if k not in dropped}
    path.write_text(json.dumps(result))

    write_report(bench_copy, figures=False)
    report = (bench_copy / "report.md").read_text()
    assert "(3 ok, 1 incomplete, 0 failed)" in report
    assert _table(report, "vae")["ok runs"] == "1/2 (1 incomplete)"
    note = next(line for line in report.splitlines() if line.startswith("- `vae` seed 0"))
    assert "runs/digits/vae/seed0/result.json" in note
    assert all(f"no {group} metrics" in note for group in dropped)

    results = run_benchmark(_bench_config(bench_copy), report=False)
    out = capsys.readouterr().out
    assert f"digits vae seed 0: its result says ok but has no {', '.join(dropped)} metrics" in out
    assert out.count("skipping, done") == 3
    assert results[0]["status"] == "ok" and set(dropped) <= set(results[0]["metrics"])


def test_the_paired_table_compares_each_model_with_the_first_on_shared_seeds():
    mse = {"a": [0.10, 0.20, 0.30], "b": [0.08, 0.21, 0.25], "c": [0.30, 0.10]}
    elbo = {"a": [-100.0, -90.0, -95.0], "b": [-99.0, -91.0, -90.0], "c": [-120.0, -80.0]}
    results = [_synthetic(model, seed, loss__loss=1.0 + seed, reconstruction__mse=mse[model][seed],
                          likelihood__elbo=elbo[model][seed])
               for model in ("a", "b", "c") for seed in range(len(mse[model]))]
    rows = [result_row(r) for r in results]
    table = paired_table(rows, ["a", "b", "c"]).splitlines()
    assert table[0] == "| vs `a` | MSE/dim ↓ | ELBO ↑ |"  # not the test loss
    b_cells, c_cells = ([cell.strip() for cell in line.strip("|").split("|")][1:]
                        for line in table[2:])

    def cell(ours, theirs, better):
        differences = [x - y for x, y in zip(ours, theirs, strict=False)]
        error = statistics.stdev(differences) / len(differences) ** 0.5
        wins = sum(d >= 0 if better == "higher" else d <= 0 for d in differences)
        return differences, error, wins

    differences, error, wins = cell(mse["b"], mse["a"], "lower")
    assert wins == 2
    assert b_cells[0] == f"{statistics.fmean(differences):+.4f} ± {error:.4f} (2/3)"
    differences, error, wins = cell(elbo["b"], elbo["a"], "higher")
    assert b_cells[1] == f"{statistics.fmean(differences):+.3f} ± {error:.3f} (2/3)"
    # c ran seeds 0 and 1 only: the pairs are those two seeds
    differences, error, wins = cell(elbo["c"], elbo["a"], "higher")
    assert c_cells[1] == f"{statistics.fmean(differences):+.2f} ± {error:.2f} (1/2)"
    assert paired_table([r for r in rows if r["model"] == "a"], ["a"]) is None
    single_seed = [r for r in rows if r["seed"] == 0]
    assert paired_table(single_seed, ["a", "b", "c"]) is None  # one seed: no error to give
    report = render_report(results, {"models": ["a", "b", "c"]}, generated="today")
    assert "**Seed by seed against `a`**" in report and "\n".join(table) in report
