"""Tests for the disentanglement metrics (vaebench.metrics.disentanglement).

Every metric is checked on synthetic codes whose answer is known: a code that copies the
factors (one dimension per factor, through a monotone map, plus small noise), random codes
independent of the factors, and a code that mixes two factors by a rotation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import vaebench
from vaebench.data.dsprites import FACTOR_NAMES, FACTOR_SIZES
from vaebench.metrics import disentanglement as dm

SIZES = np.array(FACTOR_SIZES)
CHANCE = float(np.mean(1.0 / SIZES))  # mean over factors of 1 / V_k: 0.1175


def _factors(n: int, seed: int, sizes=FACTOR_SIZES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, size=n) for s in sizes], axis=1)


def _unit(factors: np.ndarray, sizes=FACTOR_SIZES) -> np.ndarray:
    """Factor classes mapped into (0, 1), class centres."""
    return (factors + 0.5) / np.asarray(sizes)


def _affine_code(factors: np.ndarray, seed: int, noise: float = 1e-3) -> np.ndarray:
    """One code dimension per factor: an affine map of the class, plus small noise."""
    rng = np.random.default_rng(seed)
    u = _unit(factors)
    z = u * np.array([2.0, -1.0, 3.0, 0.5, -4.0]) + np.array([0.0, 1.0, -2.0, 5.0, 0.3])
    return z + noise * rng.standard_normal(z.shape)


def _monotone_code(factors: np.ndarray, seed: int, noise: float = 1e-3) -> np.ndarray:
    """One code dimension per factor through nonlinear increasing/decreasing maps."""
    rng = np.random.default_rng(seed)
    u = _unit(factors)
    z = np.stack([np.exp(2 * u[:, 0]), u[:, 1] ** 2, np.tanh(u[:, 2]), 3 * u[:, 3] - 1,
                  -(u[:, 4] + u[:, 4] ** 3)], axis=1)
    return z + noise * rng.standard_normal(z.shape)


def _rotated_code(factors: np.ndarray, seed: int) -> np.ndarray:
    """The monotone code with pos_x and pos_y mixed by a 45 degree rotation."""
    z = _monotone_code(factors, seed)
    u = _unit(factors)
    z[:, 3] = (u[:, 3] + u[:, 4]) / math.sqrt(2)
    z[:, 4] = (u[:, 3] - u[:, 4]) / math.sqrt(2)
    return z


def _random_code(n: int, seed: int, d: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.fixture(scope="module")
def split():
    """Train (1500) and test (800) factors with the dSprites sizes."""
    return _factors(1500, 1), _factors(800, 2)


# ----------------------------------------------------------------------------- MIG


def test_discretize_equal_width_bins():
    z = np.array([[0.0, 7.0], [0.49, 7.0], [0.5, 7.0], [1.0, 7.0]])
    np.testing.assert_array_equal(dm.discretize(z, n_bins=2), [[0, 0], [0, 0], [1, 0], [1, 0]])
    # integer codes sit exactly on bin edges (t = 4c); an affine rescaling keeps their bins
    c = np.arange(6, dtype=np.float64)[:, None]
    bins = dm.discretize(c, n_bins=20)
    np.testing.assert_array_equal(bins[:, 0], [0, 4, 8, 12, 16, 19])
    for a, b in [(3.0, 1.0), (0.1, -7.0), (1e3, 0.3)]:
        np.testing.assert_array_equal(dm.discretize(a * c + b, n_bins=20), bins)


def test_mig_hand_computed():
    # v: first factor, w: second; z0 copies v, z2 copies w, z1 is a noisy copy of v
    v = [0, 0, 0, 0, 1, 1, 1, 1]
    w = [0, 0, 1, 1, 0, 0, 1, 1]
    z1 = [0, 0, 0, 1, 1, 1, 1, 1]
    codes = np.array([v, z1, w], dtype=np.float64).T
    factors = np.array([v, w]).T
    log2 = math.log(2)
    # joint counts of (z1, v): (0,0)=3 (0,1)=0 (1,0)=1 (1,1)=4; p(z1)=(3/8, 5/8), p(v)=(1/2, 1/2)
    i_z1_v = 3 / 8 * math.log((3 / 8) / (3 / 8 * 1 / 2)) \
        + 1 / 8 * math.log((1 / 8) / (5 / 8 * 1 / 2)) \
        + 4 / 8 * math.log((4 / 8) / (5 / 8 * 1 / 2))
    # joint counts of (z1, w): (0,0)=2 (0,1)=1 (1,0)=2 (1,1)=3
    i_z1_w = 2 / 8 * math.log((2 / 8) / (3 / 8 * 1 / 2)) \
        + 1 / 8 * math.log((1 / 8) / (3 / 8 * 1 / 2)) \
        + 2 / 8 * math.log((2 / 8) / (5 / 8 * 1 / 2)) \
        + 3 / 8 * math.log((3 / 8) / (5 / 8 * 1 / 2))
    expected_mi = np.array([[log2, 0.0], [i_z1_v, i_z1_w], [0.0, log2]])
    np.testing.assert_allclose(dm.mutual_information_matrix(codes, factors, n_bins=2),
                               expected_mi, atol=1e-12)
    np.testing.assert_allclose(dm.factor_entropies(factors), [log2, log2])
    per_factor = [(log2 - i_z1_v) / log2, (log2 - i_z1_w) / log2]
    np.testing.assert_allclose(dm.mig_per_factor(codes, factors, n_bins=2), per_factor)
    assert dm.mig(codes, factors, n_bins=2) == pytest.approx(np.mean(per_factor), abs=1e-12)
    assert 0.0 < dm.mig(codes, factors, n_bins=2) < 1.0


def test_mig_perfect_random_and_rotated():
    factors = _factors(20000, 3)
    # with at least as many bins as classes each class has its own bin: I(z_k; v_k) = H(v_k)
    perfect = dm.mig(_affine_code(factors, 0), factors, n_bins=40)
    assert perfect > 0.97
    assert dm.mig(_random_code(20000, 0), factors, n_bins=40) < 0.05
    assert dm.mig(_random_code(20000, 0), factors) < 0.05
    # mixing pos_x and pos_y: both rotated dimensions share the information about both
    rotated = _affine_code(factors, 0)
    u = _unit(factors)
    rotated[:, 3], rotated[:, 4] = u[:, 3] + u[:, 4], u[:, 3] - u[:, 4]
    per_factor = dm.mig_per_factor(rotated, factors, n_bins=40)
    assert (per_factor[3:] < 0.3).all()
    assert dm.mig(rotated, factors, n_bins=40) < perfect - 0.25
    # the default 20 bins merge classes of the 40-class orientation: its gap is at most
    # log(20) / log(40), so MIG of a perfect code stays below 1
    default = dm.mig_per_factor(_affine_code(factors, 0), factors)
    assert default[2] <= math.log(20) / math.log(40) + 1e-9
    assert default[0] > 0.99 and default[1] > 0.99


def test_mig_affine_invariance():
    factors = _factors(3000, 4)
    rng = np.random.default_rng(5)
    # partially informative codes: factor plus noise of the size of a few classes, mixed
    codes = factors + rng.normal(scale=3.0, size=factors.shape)
    codes[:, 1] += 0.3 * factors[:, 0]
    scale = np.array([0.01, 7.0, 1.0, 250.0, 0.5])
    shift = np.array([3.0, -100.0, 0.0, 1e4, -0.25])
    base = dm.mig_per_factor(codes, factors)
    np.testing.assert_allclose(dm.mig_per_factor(codes * scale + shift, factors), base,
                               rtol=1e-10)
    # integer codes on bin edges, too
    exact = factors.astype(np.float64)
    assert dm.mig(exact * scale + shift, factors) == pytest.approx(dm.mig(exact, factors),
                                                                   rel=1e-12)


def test_mig_constant_dimension_and_single_valued_factor():
    factors = _factors(3000, 6)
    codes = _affine_code(factors, 1) + np.random.default_rng(2).normal(size=(3000, 5))
    base = dm.mig(codes, factors)
    with_constant = np.concatenate([codes, np.full((3000, 1), 4.2)], axis=1)
    mi = dm.mutual_information_matrix(with_constant, factors)
    np.testing.assert_array_equal(mi[-1], 0.0)
    assert dm.mig(with_constant, factors) == pytest.approx(base, abs=1e-12)
    # a factor with a single value has H = 0: NaN per factor, skipped in the mean
    with_fixed = np.concatenate([factors, np.zeros((3000, 1), dtype=np.int64)], axis=1)
    per_factor = dm.mig_per_factor(codes, with_fixed)
    assert np.isnan(per_factor[-1]) and np.isfinite(per_factor[:-1]).all()
    assert dm.mig(codes, with_fixed) == pytest.approx(base, abs=1e-12)


def test_mig_accepts_torch():
    factors = _factors(1000, 7)
    codes = _random_code(1000, 1) + factors
    expected = dm.mig(codes, factors)
    assert dm.mig(torch.from_numpy(codes).float(), torch.from_numpy(factors)) == \
        pytest.approx(expected, abs=1e-3)


# ----------------------------------------------------------------------------- DCI


def test_dci_from_importance_known_matrices():
    perm = np.eye(5)[[3, 0, 4, 1, 2]]
    assert dm.dci_from_importance(perm) == pytest.approx((1.0, 1.0))
    assert dm.dci_from_importance(np.full((5, 5), 0.7)) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert dm.dci_from_importance(np.full((6, 3), 1.0)) == pytest.approx((0.0, 0.0), abs=1e-12)
    # two codes per factor, each for one factor: disentangled (D=1) but not complete:
    # C_k = 1 - H_6(1/2, 1/2) = 1 - log 2 / log 6
    two_per_factor = np.kron(np.eye(3), np.ones((2, 1)))
    d, c = dm.dci_from_importance(two_per_factor)
    assert d == pytest.approx(1.0)
    assert c == pytest.approx(1 - math.log(2) / math.log(6))
    # by hand: R = [[3, 1], [0, 2]]; rho = (4/6, 2/6); D_1 = 1 - H_2(3/4, 1/4), D_2 = 1;
    # factor weights (3/6, 3/6); C_1 = 1, C_2 = 1 - H_2(1/3, 2/3)
    def h2(p):
        return -sum(q * math.log2(q) for q in p)

    d, c = dm.dci_from_importance([[3.0, 1.0], [0.0, 2.0]])
    assert d == pytest.approx(4 / 6 * (1 - h2([3 / 4, 1 / 4])) + 2 / 6)
    assert c == pytest.approx(3 / 6 + 3 / 6 * (1 - h2([1 / 3, 2 / 3])))
    # a code with zero importance (e.g. a constant dimension) carries no weight
    assert dm.dci_from_importance(np.vstack([perm, np.zeros((1, 5))]))[0] == pytest.approx(1.0)
    assert dm.dci_from_importance(np.zeros((3, 2))) == (0.0, 0.0)
    assert dm.dci_from_importance([[0.2], [0.8]])[0] == pytest.approx(1.0)  # one factor
    with pytest.raises(ValueError, match="non-negative"):
        dm.dci_from_importance([[1.0, -0.1]])
    with pytest.raises(ValueError, match="2-D"):
        dm.dci_from_importance([1.0, 2.0])


def test_dci_perfect_random_rotated(split):
    train, test = split
    perfect = dm.dci(_monotone_code(train, 0), train, _monotone_code(test, 1), test)
    assert perfect["disentanglement"] > 0.95
    assert perfect["completeness"] > 0.95
    assert perfect["informativeness"] > 0.95
    assert perfect["importance"].shape == (5, 5) and perfect["factors"] == [0, 1, 2, 3, 4]
    assert np.argmax(perfect["importance"], axis=0).tolist() == [0, 1, 2, 3, 4]

    rand = dm.dci(_random_code(1500, 0), train, _random_code(800, 1), test)
    assert rand["disentanglement"] < 0.1
    assert rand["completeness"] < 0.1
    assert abs(rand["informativeness"] - CHANCE) < 0.03  # test accuracy at chance
    assert rand["train_accuracy"] > 0.9  # the forest memorizes noise, so test on held out

    rotated = dm.dci(_rotated_code(train, 0), train, _rotated_code(test, 1), test)
    assert rotated["disentanglement"] < perfect["disentanglement"] - 0.2
    assert rotated["completeness"] < perfect["completeness"] - 0.2


def test_dci_other_predictors_and_single_valued_factor():
    sizes = (3, 4, 1)
    train, test = _factors(400, 8, sizes), _factors(200, 9, sizes)
    rng = np.random.default_rng(0)

    def code(f):
        u = _unit(f, sizes)
        return np.stack([2 * u[:, 0] + 1, -u[:, 1], rng.standard_normal(len(f))], axis=1)

    z_tr, z_te = code(train), code(test)
    for model in ("lasso", "gbt"):
        out = dm.dci(z_tr, train, z_te, test, model=model)
        assert out["factors"] == [0, 1]  # the single-valued factor is skipped
        assert out["disentanglement"] > 0.8, model
        assert out["informativeness"] > 0.9, model
        noise = dm.dci(rng.standard_normal((400, 3)), train, rng.standard_normal((200, 3)),
                       test, model=model)
        assert noise["informativeness"] < 0.6, model


# ----------------------------------------------------------------------------- SAP


def test_sap_perfect_random_rotated(split):
    train, test = split
    scores = dm.sap_score_matrix(_monotone_code(train, 0), train, _monotone_code(test, 1), test)
    assert (np.diag(scores) > 0.99).all()
    off = scores.T[~np.eye(5, dtype=bool)].reshape(5, 4)  # row k: codes j != k
    # a dimension independent of v_k predicts it at chance, balanced accuracy 1 / V_k
    np.testing.assert_allclose(off.mean(axis=1), 1.0 / SIZES, atol=0.03)
    # so a perfect code scores 1/K sum_k (1 - 1/V_k) = 0.8825, not 1
    expected = float(np.mean(1 - 1.0 / SIZES))
    perfect = dm.sap(_monotone_code(train, 0), train, _monotone_code(test, 1), test)
    assert perfect == pytest.approx(expected, abs=0.03)
    assert dm.sap(_random_code(1500, 0), train, _random_code(800, 1), test) < 0.05
    rotated = dm.sap(_rotated_code(train, 0), train, _rotated_code(test, 1), test)
    assert rotated < perfect - 0.2


def test_sap_constant_dimension_and_single_valued_factor():
    sizes = (3, 5, 1)
    train, test = _factors(600, 10, sizes), _factors(300, 11, sizes)

    def code(f):
        u = _unit(f, sizes)
        return np.stack([u[:, 0], u[:, 1], np.zeros(len(f))], axis=1)

    scores = dm.sap_score_matrix(code(train), train, code(test), test)
    assert np.isnan(scores[:, 2]).all()
    # a constant dimension predicts one class: balanced accuracy exactly 1 / V_k
    np.testing.assert_allclose(scores[2, :2], [1 / 3, 1 / 5])
    assert scores[0, 0] == 1.0 and scores[1, 1] == 1.0
    second = [max(scores[1, 0], scores[2, 0]), max(scores[0, 1], scores[2, 1])]
    expected = np.mean([1 - second[0], 1 - second[1]])
    assert dm.sap(code(train), train, code(test), test) == pytest.approx(expected)


# ----------------------------------------------------------------------------- FactorVAE


def _encoder(kind: str, seed: int):
    rng = np.random.default_rng(seed)

    def codes_fn(classes: np.ndarray) -> np.ndarray:
        n = classes.shape[0]
        if kind == "random":
            return rng.standard_normal((n, 5))
        z = _monotone_code(classes, int(rng.integers(1 << 30)), noise=1e-2)
        if kind == "with_constant":
            z = np.concatenate([z, np.full((n, 1), 3.0)], axis=1)
        return torch.from_numpy(z)  # tensors are accepted too

    return codes_fn


def test_factor_vae_score_synthetic():
    kwargs = dict(n_votes_train=300, n_votes_eval=500, batch_size=32, n_std=2000, seed=0)
    assert dm.factor_vae_score_from_fn(_encoder("perfect", 0), FACTOR_SIZES, **kwargs) == 1.0
    # a constant dimension has std 0: it is pruned, not divided by
    with_constant = dm.factor_vae_score_from_fn(_encoder("with_constant", 0), FACTOR_SIZES,
                                                **kwargs)
    assert with_constant == 1.0
    # codes unrelated to the factors: the classifier is at chance, 1/K = 0.2
    rand = dm.factor_vae_score_from_fn(_encoder("random", 0), FACTOR_SIZES, **kwargs)
    assert abs(rand - 1 / 5) < 0.07
    # same seed, same score
    again = dm.factor_vae_score_from_fn(_encoder("random", 0), FACTOR_SIZES, **kwargs)
    assert again == rand


def test_factor_vae_score_skips_single_valued_factor_and_uses_sample_fn():
    sizes = (4, 1, 6)

    def random_fn(classes):
        return np.random.default_rng(int(classes.sum())).standard_normal((len(classes), 3))

    # two varying factors: chance is 1/2
    score = dm.factor_vae_score_from_fn(random_fn, sizes, n_votes_train=200, n_votes_eval=600,
                                        batch_size=16, n_std=500, seed=1)
    assert abs(score - 0.5) < 0.08

    drawn = []

    def sample_fn(m, rng):  # factor 0 takes only the values 1 and 3
        out = np.stack([1 + 2 * rng.integers(0, 2, m), np.zeros(m, int), rng.integers(0, 6, m)],
                       axis=1)
        drawn.append(out)
        return out

    def aligned_fn(classes):
        # factor 1 never varies: its dimension is nearly constant (a collapsed code), pruned
        wiggle = 0.01 * np.sin(np.arange(len(classes)))[:, None]
        return classes[:, [0, 2, 1]].astype(np.float64) + wiggle

    score = dm.factor_vae_score_from_fn(aligned_fn, sizes, sample_fn=sample_fn,
                                        n_votes_train=50, n_votes_eval=50, batch_size=16,
                                        n_std=200)
    assert score == 1.0
    assert set(np.unique(np.concatenate(drawn)[:, 0])) == {1, 3}


def test_factor_vae_score_unseen_dimension_predicts_nothing():
    # one training vote: only its factor's dimension is mapped; votes for the other factor
    # land on a dimension never seen in training and count as wrong (about half the votes)
    def aligned_fn(classes):
        return classes.astype(np.float64)

    for seed in range(4):
        score = dm.factor_vae_score_from_fn(aligned_fn, (4, 6), n_votes_train=1,
                                            n_votes_eval=400, batch_size=16, n_std=200,
                                            seed=seed)
        assert 0.4 < score < 0.6, seed


# ----------------------------------------------------------------------------- validation


def test_input_validation_errors():
    f = _factors(50, 0)
    z = _random_code(50, 0)
    bad = z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        dm.mig(bad, f)
    with pytest.raises(ValueError, match="NaN or infinite"):
        dm.dci(z, f, bad, f)
    with pytest.raises(ValueError, match="2-D"):
        dm.mig(z[:, 0], f)
    with pytest.raises(ValueError, match="integer"):
        dm.mig(z, f.astype(np.float32))
    with pytest.raises(ValueError, match="same number of rows"):
        dm.sap(z, f[:40], z, f)
    with pytest.raises(ValueError, match="same number of dimensions"):
        dm.sap(z, f, z[:, :3], f)
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        dm.mig(z[:, :1], f)
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        dm.sap(z[:, :1], f, z[:, :1], f)
    with pytest.raises(ValueError, match="n_bins"):
        dm.mig(z, f, n_bins=1)
    with pytest.raises(ValueError, match="model must be one of"):
        dm.dci(z, f, z, f, model="svm")
    with pytest.raises(ValueError, match="single value"):
        dm.mig(z, np.zeros((50, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="single value"):
        dm.dci(z, np.zeros((50, 2), dtype=np.int64), z, f[:, :2])
    with pytest.raises(ValueError, match="NaN or infinite"):
        dm.factor_vae_score_from_fn(lambda c: np.full((len(c), 2), np.nan), (3, 4), n_std=10,
                                    n_votes_train=2, n_votes_eval=2, batch_size=4)
    with pytest.raises(ValueError, match="constant"):
        dm.factor_vae_score_from_fn(lambda c: np.ones((len(c), 2)), (3, 4), n_std=10,
                                    n_votes_train=2, n_votes_eval=2, batch_size=4)
    with pytest.raises(ValueError, match="single value"):
        dm.factor_vae_score_from_fn(lambda c: c.astype(float), (1, 1), n_std=10)


# ----------------------------------------------------------------------------- end to end


def test_disentanglement_report_tiny_vae():
    model = vaebench.create_model("vae", input_dim=(1, 64, 64), latent_dim=5)
    model.train()
    report = dm.disentanglement_report(model, n=300, n_test=150, seed=3, n_votes_train=40,
                                       n_votes_eval=40, n_std=300, batch_size=128)
    assert model.training  # the previous mode is restored
    assert report["factors"] == list(FACTOR_NAMES)
    assert (report["n_train"], report["n_test"], report["latent_dim"]) == (300, 150, 5)
    for key in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness",
                "sap", "factor_vae_score"):
        assert isinstance(report[key], float) and 0.0 <= report[key] <= 1.0, key
    assert all(p.grad is None for p in model.parameters())

    score = dm.factor_vae_score(model, n_votes_train=20, n_votes_eval=20, n_std=200, seed=1)
    assert 0.0 <= score <= 1.0

    with pytest.raises(ValueError, match="input_dim"):
        dm.disentanglement_report(vaebench.create_model("vae", input_dim=(1, 28, 28),
                                                        latent_dim=2), n=10)
