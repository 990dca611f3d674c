"""Speed of the FID feature networks on this machine, and what FID on 10,000 images costs.

    .venv/bin/python benchmarks/fid_speed.py [--threads 2] [--images 32]

Measures images/s of InceptionFeatures (batch sizes 8 and 32, after one warm-up batch) and
of ClassifierFeatures (mnist5k, trained or loaded from the cache), the time of the
statistics themselves (Frechet distance of 2048-d Gaussians; precision / recall, timed on
2,000 points and scaled by n^2), and estimates the wall time of FID + precision / recall on
10,000 generated and 10,000 reference images. Run it with nothing else busy on the machine:
torch's threads slow down badly when the cores are shared.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vaebench.data import load_dataset
from vaebench.metrics.features import ClassifierFeatures, InceptionFeatures
from vaebench.metrics.sample_quality import frechet_distance, gaussian_stats, precision_recall


def _rate(extractor, images: torch.Tensor) -> float:
    extractor(images[: extractor.batch_size])  # warm-up (allocations, TorchScript profiling)
    start = time.perf_counter()
    extractor(images)
    return len(images) / (time.perf_counter() - start)


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--images", type=int, default=32,
                        help="images timed per Inception batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--n-fid", type=int, default=10_000, help="FID sample count to estimate")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")

    x_train, _ = load_dataset("mnist5k", "train")
    n = args.n_fid

    start = time.perf_counter()
    inception = InceptionFeatures()
    print(f"InceptionFeatures: locate + sha1 + load {time.perf_counter() - start:.2f} s")
    rates = {}
    for batch_size in args.batch_sizes:
        inception.batch_size = batch_size
        count = max(args.images, batch_size)
        rates[batch_size] = _rate(inception, x_train[:count])
        print(f"  batch {batch_size:3d}: {rates[batch_size]:6.2f} images/s ({count} images)")
    best = max(rates.values())

    start = time.perf_counter()
    classifier = ClassifierFeatures.for_dataset("mnist5k")
    how = "loaded from cache" if classifier.loaded_from_cache else "trained"
    print(f"ClassifierFeatures mnist5k ({how} in {time.perf_counter() - start:.1f} s, "
          f"test accuracy {classifier.test_accuracy:.4f})")
    classifier_rate = _rate(classifier, x_train)
    print(f"  batch {classifier.batch_size}: {classifier_rate:8.0f} images/s "
          f"({len(x_train)} images)")

    rng = np.random.default_rng(0)
    dim = 2048
    feats = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) / np.sqrt(dim)
    start = time.perf_counter()
    stats1 = gaussian_stats(feats)
    stats2 = gaussian_stats(feats[::-1] + 0.1)
    stats_seconds = (time.perf_counter() - start) / 2
    start = time.perf_counter()
    frechet_distance(*stats1, *stats2)
    fd_seconds = time.perf_counter() - start
    m = 2000
    start = time.perf_counter()
    precision_recall(feats[:m], feats[m:2 * m] + 0.1, k=3)
    pr_seconds = (time.perf_counter() - start) * (n / m) ** 2
    print(f"statistics, {dim}-d: gaussian_stats of {n} features {stats_seconds:.1f} s, "
          f"frechet_distance {fd_seconds:.1f} s, precision/recall ~{_fmt(pr_seconds)} "
          f"(timed on {m} x {m}, scaled by n^2)")

    stats_total = 2 * stats_seconds + fd_seconds + pr_seconds
    inception_total = 2 * n / best + stats_total
    classifier_total = 2 * n / classifier_rate + stats_total
    print(f"estimated FID + precision/recall on {n} generated + {n} reference images:")
    print(f"  inception-v3-fid: {_fmt(inception_total)} "
          f"({_fmt(n / best)} per {n} images through the network at {best:.2f} images/s)")
    print(f"  classifier-mnist5k (128-d; its statistics are cheaper than the 2048-d ones "
          f"counted here): at most {_fmt(classifier_total)}")


if __name__ == "__main__":
    main()
