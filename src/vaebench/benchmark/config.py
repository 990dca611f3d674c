"""What a benchmark runs: :class:`BenchmarkConfig` (typed, validated, JSON-serializable)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from vaebench.config import LikelihoodOptions
from vaebench.training.config import check_device

#: Metric groups a run can compute, in the order they are computed and reported.
METRICS = ("loss", "reconstruction", "likelihood", "sample_quality", "representation",
           "disentanglement")
FEATURE_NETWORKS = ("classifier", "inception")
#: How runs are executed: in this process (or ``jobs`` local worker processes), or on Ray.
EXECUTORS = ("local", "ray")
#: Model config fields a benchmark sets for every model; model_options may not override them.
_SHARED_FIELDS = ("input_dim",)


def dataset_key(dataset: str) -> str:
    """Name of a dataset in folders and tables: a bundled name as is, a path by its file or
    folder name (without suffix), reduced to letters, digits, ``-``, ``_`` and ``.``."""
    from vaebench.data import DATASETS, TABLES

    if dataset in DATASETS or dataset in TABLES:
        return dataset
    path = Path(dataset)
    stem = path.stem if path.suffix else path.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "data"


class BenchmarkConfig(LikelihoodOptions):
    """Every model x dataset x seed trained with the same networks and budget.

    ``seeds`` is a count (``3`` runs seeds 0, 1, 2) or an explicit list. ``encoder`` and
    ``decoder`` left at None give each model its own default: ``mlp`` for most, the
    ``spatial`` networks for the VQ family on images, so "same networks" holds within a
    family; name a network (``"mlp"``, ``"conv"``) to impose one on every model.
    ``model_options`` maps a model name to config fields of that model only, e.g.
    ``{"beta_vae": {"beta": 4}}``; ``sampler_options`` a sampler name to its options, e.g.
    ``{"pixelcnn": {"epochs": 1}}``. ``likelihood="auto"`` (the default) chooses it from each
    dataset: a table's ``mixed`` likelihood, bernoulli for 0/1 data, else gaussian with
    ``sigma="data"``.
    """

    accepts_auto = True
    likelihood: str = Field("auto", description="reconstruction distribution p(x|z), or "
                                                "'auto': chosen from the data",
                            validate_default=True)

    models: list[str] = Field(min_length=1, description="registered model names")
    datasets: list[str] = Field(["mnist5k"], min_length=1,
                                description="bundled dataset or table names, folders of "
                                            "images, .npy files or table files")
    seeds: int | list[int] = Field(3, description="a count (seeds 0..n-1) or a list of seeds")
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(64, gt=0)
    even_batches: bool = Field(False, description="cut each epoch into batches of near-equal "
                                                  "size (see TrainerConfig)")
    learning_rate: float = Field(1e-3, gt=0)
    latent_dim: int = Field(16, gt=0)
    encoder: str | None = Field(None, description="None: each model's default network")
    decoder: str | None = Field(None, description="None: each model's default network")
    model_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per model name, overrides of its config fields")
    samplers: list[str] = Field(
        ["normal", "gmm"], description="samplers whose sample quality is measured besides each "
                                       "model's own, for the models they serve")
    sampler_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="options of each sampler, by sampler name")
    train_size: int | None = Field(None, gt=0, description="use the first N training samples "
                                                           "(dsprites: generate N)")
    data_seed: int = Field(0, ge=0, description="seed of the data split / dsprites subset, "
                                                "the same for every run")
    mode_specific: bool = Field(False, description="tables: numeric columns by TVAE's "
                                                   "mode-specific normalization")
    data_root: str | None = Field(None, description="folder with the MNIST files")
    skip_bad_images: bool = Field(False, description="leave out unreadable files of an image "
                                                     "folder (with a warning)")
    metrics: list[str] | None = Field(None, description=f"subset of {', '.join(METRICS)}; "
                                                        "None: every one that applies")
    features: str = Field("classifier", description="feature network of FID / precision / "
                                                    "recall: 'classifier' or 'inception'")
    n_fid: int = Field(1000, ge=4, description="generated samples for FID / precision / recall")
    iwae_k: int = Field(100, gt=0, description="importance samples of the log p(x) estimate")
    dsprites_n: int = Field(10000, ge=10, description="dSprites images encoded for the "
                                                      "disentanglement metrics")
    output: str = Field("bench", description="folder of the runs, report and figures")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    progress: bool = Field(False, description="show the trainer's progress bar")
    executor: str = Field("local", description="'local': in this process, or in `jobs` worker "
                                               "processes; 'ray': each run a Ray task")
    address: str | None = Field(None, description="the Ray cluster of executor 'ray'; None: "
                                                  "$RAY_ADDRESS, else a local Ray")
    jobs: int = Field(1, gt=0, description="local runs at once, each in a worker process when "
                                           "more than 1")
    cpus_per_run: int | None = Field(None, gt=0, description=(
        "CPUs (torch threads) of each run; None: the process's threads when runs go one "
        "after another, the CPUs shared among the jobs, 1 per Ray task"))
    log: list[str] = Field(default_factory=list, description="experiment trackers of every "
                           "run: tensorboard, mlflow, wandb (docs/tracking.md)")
    tracking_uri: str | None = Field(None, description="the MLflow store; None: a local "
                                                       "SQLite store in OUTPUT/mlruns")

    # --- validation ---------------------------------------------------------------------
    @field_validator("models", "datasets", "metrics", "samplers", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        """Accept ``"vae,beta_vae"`` (as on the command line) for a list of names."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        from vaebench.models import list_models

        known = list_models()
        unknown = [name for name in value if name not in known]
        if unknown:
            raise ValueError(f"unknown model {unknown[0]!r}; known models: {', '.join(known)}")
        return _unique(value, "model")

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, value: list[str]) -> list[str]:
        from vaebench.data import DATASETS, TABLES

        for name in value:
            if name not in (*DATASETS, *TABLES) and not Path(name).expanduser().exists():
                raise ValueError(f"{name!r} is neither a bundled dataset ({', '.join(DATASETS)})"
                                 f" or table ({', '.join(TABLES)}) nor an existing folder or "
                                 "file")
        value = _unique(value, "dataset")
        keys = [dataset_key(name) for name in value]
        if len(set(keys)) != len(keys):
            raise ValueError(f"datasets {value} share a name ({keys}): rename a folder or file")
        return value

    @field_validator("log", mode="before")
    @classmethod
    def _known_trackers(cls, value: Any) -> list[str]:
        from vaebench.integrations.trackers import tracker_names

        return tracker_names(value)

    @field_validator("seeds")
    @classmethod
    def _valid_seeds(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int):
            if value < 1:
                raise ValueError(f"seeds must be a count of at least 1 or a list of seeds, "
                                 f"got {value}")
            return value
        if not value:
            raise ValueError("seeds is an empty list")
        if any(seed < 0 for seed in value):
            raise ValueError(f"seeds must be non-negative, got {value}")
        return _unique(value, "seed")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [name for name in value if name not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
        if not value:
            raise ValueError("metrics is empty; leave it out to compute every one that applies")
        return [name for name in METRICS if name in value]  # canonical order

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: str) -> str:
        if value not in FEATURE_NETWORKS:
            raise ValueError(f"features must be one of {', '.join(FEATURE_NETWORKS)}, "
                             f"got {value!r}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device(value)

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str, info: ValidationInfo) -> str:
        if value not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {value!r}")
        device = info.data.get("device", "auto")
        if value == "ray" and device.startswith("cuda:") and device != "cuda:0":
            raise ValueError(f"a Ray task sees the one GPU Ray gives it as cuda:0: use device "
                             f"'cuda' or 'auto' with executor 'ray', not {device!r}")
        return value

    @field_validator("address")
    @classmethod
    def _address_of_ray(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("executor") != "ray":
            raise ValueError("address is the Ray cluster of executor 'ray'; choose that "
                             "executor or leave the address out")
        return value

    @field_validator("jobs")
    @classmethod
    def _jobs_are_local(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and info.data.get("executor") == "ray":
            raise ValueError("jobs counts local worker processes; with executor 'ray' the "
                             "cluster's CPUs and GPUs decide how many runs go at once (see "
                             "cpus_per_run)")
        return value

    @field_validator("model_options")
    @classmethod
    def _valid_model_options(cls, value: dict[str, dict[str, Any]],
                             info: ValidationInfo) -> dict[str, dict[str, Any]]:
        """Check the options of each benchmarked model; drop, with a warning, those of
        registered models that this benchmark leaves out (a narrowed reference config)."""
        from vaebench.models import list_models

        known = list_models()
        unknown = [name for name in value if name not in known]
        if unknown:
            raise ValueError(f"model_options names {unknown[0]!r}, which is not a registered "
                             f"model; known models: {', '.join(known)}")
        models = info.data.get("models")
        if models is None:  # the models are invalid: that error is reported
            return value
        left_out = [name for name in value if name not in models]
        if left_out:
            warnings.warn(f"model_options of {', '.join(left_out)} ignored: not among the "
                          f"benchmarked models {', '.join(models)}", UserWarning, stacklevel=2)
        kept = {name: options for name, options in value.items() if name in models}
        for name, options in kept.items():
            _check_option_fields(name, options)
        return kept

    @field_validator("samplers")
    @classmethod
    def _known_samplers(cls, value: list[str]) -> list[str]:
        from vaebench.samplers import get_sampler_class

        for name in value:
            get_sampler_class(name)  # an unknown name is an error naming the known ones
        return _unique(value, "sampler")

    @field_validator("sampler_options")
    @classmethod
    def _valid_sampler_options(cls, value: dict[str, dict[str, Any]]
                               ) -> dict[str, dict[str, Any]]:
        """Each named sampler is registered and its options are valid (errors name them)."""
        from pydantic import ValidationError

        from vaebench.samplers import get_sampler_class

        for name, options in value.items():
            try:
                get_sampler_class(name).config_class(**options)
            except ValidationError as err:
                problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                    for e in err.errors())
                raise ValueError(f"sampler_options.{name}: {problem}") from None
        return value

    # --- derived values -----------------------------------------------------------------
    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def wants(self, metric: str) -> bool:
        return self.metrics is None or metric in self.metrics

    def run_config(self, dataset: str, model: str, seed: int) -> dict[str, Any]:
        """The settings that determine one run's result (not where or how it is shown);
        ``mode_specific`` only for a table, the only data it changes (so the runs of image
        benchmarks made before it existed stay done)."""
        from vaebench.data import is_table

        everything = self.to_dict()
        skip = {"models", "datasets", "seeds", "model_options", "output", "device",
                "progress", "data_root", "skip_bad_images", "executor", "address", "jobs",
                "cpus_per_run", "log", "tracking_uri"}
        if not is_table(dataset):
            skip.add("mode_specific")
        out = {"dataset": dataset, "model": model, "seed": seed,
               "model_options": everything["model_options"].get(model, {})}
        out.update({k: v for k, v in everything.items() if k not in skip})
        return out

    # --- files --------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> BenchmarkConfig:
        """Read a JSON (or, with PyYAML installed, YAML) file; ``overrides`` replace its
        values (``model_options`` are merged per model)."""
        return cls(**merge_options(read_config_file(path), overrides))

    def save(self, path: str | Path) -> Path:
        from vaebench.files import write_json

        write_json(path, self.to_dict())
        return Path(path)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON or YAML benchmark file (YAML needs PyYAML, imported lazily)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark config file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ImportError(f"{path} is a YAML file, but PyYAML is not installed: "
                              "`pip install pyyaml`, or write the config as JSON") from err
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from err
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config fields, got "
                         f"{type(data).__name__}")
    return data


def merge_options(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with the non-None ``overrides``; ``model_options`` and
    ``sampler_options`` merge per model or sampler."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("model_options", "sampler_options") and isinstance(out.get(key), dict):
            merged = {name: dict(options) for name, options in out[key].items()}
            for name, options in value.items():
                merged.setdefault(name, {}).update(options)
            out[key] = merged
        else:
            out[key] = value
    return out


def _check_option_fields(name: str, options: dict[str, Any]) -> None:
    """Refuse an option that is not a config field of model ``name`` a benchmark may set."""
    from vaebench.models import get_model_class

    fields = get_model_class(name).config_class.model_fields
    for key in options:
        if key not in fields or key in _SHARED_FIELDS:
            raise ValueError(f"model_options.{name}: {key!r} is not a config field of "
                             f"{name} that a benchmark may set; fields: "
                             f"{', '.join(f for f in fields if f not in _SHARED_FIELDS)}")


def _unique(values: list, what: str) -> list:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)
    return values
