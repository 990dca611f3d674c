"""Benchmarks: many models x datasets x seeds on the same networks and budget, with a report.

>>> from vaebench.benchmark import BenchmarkConfig, run_benchmark
>>> config = BenchmarkConfig(models=["vae", "beta_vae"], datasets=["digits"], seeds=2,
...                          epochs=2, output="bench")
>>> results = run_benchmark(config)  # doctest: +SKIP

See docs/benchmark.md.
"""

from vaebench.benchmark.config import (
    FEATURE_NETWORKS,
    METRICS,
    BenchmarkConfig,
    dataset_key,
    read_config_file,
)
from vaebench.benchmark.report import (
    COLUMNS,
    collect_results,
    markdown_table,
    paired_table,
    render_report,
    result_row,
    sampler_names,
    sampler_table,
    write_report,
)
from vaebench.benchmark.runner import (
    NotApplicable,
    Run,
    evaluate_run,
    latent_traversal,
    plan_runs,
    read_result,
    run_benchmark,
    run_one,
)

__all__ = ["COLUMNS", "FEATURE_NETWORKS", "METRICS", "BenchmarkConfig", "NotApplicable", "Run",
           "collect_results", "dataset_key", "evaluate_run", "latent_traversal",
           "markdown_table", "paired_table", "plan_runs", "read_config_file", "read_result",
           "render_report", "result_row", "run_benchmark", "run_one", "sampler_names",
           "sampler_table", "write_report"]
