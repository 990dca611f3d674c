"""The mixed likelihood of a table: each column's term is its torch.distributions
counterpart in the table's own units, the row's NLL is the sum of the parts, no term
depends on the other rows of its batch, and a number's optimal sigma is its root mean
squared error."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import distributions as D

from vaebench import VAE, load_model
from vaebench.data import ArrayData, load_table
from vaebench.tabular_likelihood import Categorical, Mixed, NegativeBinomial, Poisson
from vaebench.training import Trainer, TrainerConfig

SMALL = {"latent_dim": 3, "encoder_kwargs": {"hidden": [16]}, "decoder_kwargs": {"hidden": [16]}}


def _frame(n=40, seed=0):
    """One column of each kind; ``size`` and ``colour`` have missing values."""
    rng = np.random.default_rng(seed)
    size = np.round(rng.normal(50, 12, n), 2)
    size[::7] = np.nan
    colour = rng.choice(["red", "green", "blue"], n).astype(object)
    colour[3::9] = None
    return pd.DataFrame({
        "size": size, "colour": colour, "flag": rng.random(n) < 0.3,
        "visits": rng.poisson(4, n) + np.arange(n) % 20,
        "day": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n), "D"),
    })


def _table_and_params(seed=0, sigma="optimal"):
    """Every learned log sigma and log dispersion at 0.4, every optimal sigma at e^0.4."""
    table = load_table(_frame(seed=seed))
    likelihood = Mixed(table.sample_shape, table.schema, column_sigma=sigma).double()
    with torch.no_grad():
        for column in likelihood.columns:
            for parameter in column.parameters():
                parameter.fill_(0.4)
            for name, buffer in column.named_buffers():
                if name.endswith("running_mse"):
                    buffer.fill_(np.exp(0.8))
    gen = torch.Generator().manual_seed(seed)
    params = torch.randn(len(table), table.schema.width, generator=gen, dtype=torch.float64)
    return table, likelihood, params, torch.from_numpy(table.schema.encode(_frame(seed=seed),
                                                                           np.float64))


def _tensor(values) -> torch.Tensor:
    return torch.from_numpy(np.array(values))


def test_column_likelihoods_equal_torch_distributions():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    codes = torch.randint(0, 5, (8,), generator=gen)
    torch.testing.assert_close(Categorical((5,)).nll(logits, F.one_hot(codes, 5).double()),
                               -D.Categorical(logits=logits).log_prob(codes))
    log_mean = torch.randn(8, 1, generator=gen, dtype=torch.float64) + 1
    counts = torch.poisson(torch.full((8, 1), 3.0, dtype=torch.float64), generator=gen)
    torch.testing.assert_close(Poisson((1,)).nll(log_mean, counts),
                               -D.Poisson(log_mean.exp()).log_prob(counts).squeeze(1))
    nb = NegativeBinomial((1,)).double()
    with torch.no_grad():
        nb.log_dispersion.fill_(0.7)
    r = torch.tensor(0.7, dtype=torch.float64).exp()
    expected = -D.NegativeBinomial(r, logits=log_mean - r.log()).log_prob(counts).squeeze(1)
    torch.testing.assert_close(nb.nll(log_mean, counts), expected)
    torch.testing.assert_close(nb.mean(log_mean), D.NegativeBinomial(
        r, logits=log_mean - r.log()).mean)


@pytest.mark.parametrize("sigma", ["optimal", "learned"])
def test_each_part_is_the_columns_log_likelihood_in_its_own_units(sigma):
    table, likelihood, params, x = _table_and_params(sigma=sigma)
    frame, parts = _frame(), likelihood.eval().parts(params, x)
    blocks = {str(column.name): (column, block, flag)
              for column, block, flag in table.schema.blocks()}
    sigma = likelihood.columns[0].distribution.sigma  # e^0.4 (learned: plus its soft floor)
    assert sigma.item() == pytest.approx(np.exp(0.4), abs=2e-3)

    column, block, flag = blocks["size"]  # Gaussian density per unit of size, NaN skipped
    present = _tensor(frame["size"].notna())
    loc = params[:, block.start] * column.scale + column.center
    value = _tensor(frame["size"].fillna(0))
    expected = -D.Normal(loc, sigma * column.scale).log_prob(value)
    torch.testing.assert_close(parts["size"], torch.where(present, expected, 0.0))
    torch.testing.assert_close(parts["size:missing"], F.binary_cross_entropy_with_logits(
        params[:, flag], (~present).double(), reduction="none"))

    column, block, _ = blocks["visits"]  # negative binomial at the count itself
    counts = _tensor(frame["visits"]).double()
    log_mean = params[:, block.start] + np.log(column.center)
    r = torch.tensor(0.4, dtype=torch.float64).exp()
    torch.testing.assert_close(parts["visits"], -D.NegativeBinomial(
        r, logits=log_mean - r.log()).log_prob(counts))

    column, block, _ = blocks["colour"]  # a missing category scores only its flag
    codes = [column.labels.index(v) if isinstance(v, str) else 0 for v in frame["colour"]]
    expected = -D.Categorical(logits=params[:, block]).log_prob(torch.tensor(codes))
    present = _tensor(frame["colour"].notna())
    torch.testing.assert_close(parts["colour"], torch.where(present, expected, 0.0))

    _, block, _ = blocks["flag"]
    flags = _tensor(frame["flag"]).double()
    torch.testing.assert_close(parts["flag"], -D.Bernoulli(
        logits=params[:, block.start]).log_prob(flags))
    assert set(parts) == {"size", "size:missing", "colour", "colour:missing", "flag",
                          "visits", "day"}


@pytest.mark.parametrize("sigma", ["optimal", "learned"])
def test_the_nll_is_the_sum_of_its_parts_and_ignores_the_batch(sigma):
    """In evaluation, and in training too: an optimal sigma is the estimate from the batches
    before (each call here starts from the same one), which the batch updates afterwards."""
    _, likelihood, params, x = _table_and_params(sigma=sigma)
    start = {name: value.clone() for name, value in likelihood.state_dict().items()}

    def nll(rows):
        likelihood.load_state_dict(start)
        return likelihood.nll(params[rows], x[rows])

    _, _, other_params, other_x = _table_and_params(seed=1)
    for mode in (True, False):
        likelihood.train(mode)
        full = nll(slice(None))
        likelihood.load_state_dict(start)
        torch.testing.assert_close(full, sum(likelihood.parts(params, x).values()))
        for part in (slice(0, 1), slice(0, 7), slice(7, 40)):
            torch.testing.assert_close(nll(part), full[part])
        order = torch.randperm(len(x))
        torch.testing.assert_close(nll(order), full[order])
        likelihood.load_state_dict(start)
        padded = likelihood.nll(torch.cat([params, other_params]), torch.cat([x, other_x]))
        torch.testing.assert_close(padded[:len(x)], full)


def _rms_errors(likelihood, params, x):
    """Independently: each Gaussian value's root mean squared error over the rows where it is
    present (standardized numbers and dates, a mode-specific alpha), by name."""
    errors = {}
    for column, block, flag in likelihood.blocks:
        if column.likelihood != "gaussian":
            continue
        present = np.ones(len(x), bool) if flag is None else x[:, flag].numpy() == 0
        residual = x[:, block.start].numpy() - params[:, block.start].numpy()
        errors[str(column.name)] = np.sqrt(np.mean(residual[present] ** 2))
    return errors


def _optimal_sigmas(likelihood):
    sigmas = {}
    for column, part in zip(likelihood.table.columns, likelihood.columns, strict=True):
        gaussian = getattr(part.distribution, "alpha", part.distribution)
        if column.likelihood == "gaussian":
            sigmas[str(column.name)] = gaussian.sigma.item()
    return sigmas


@pytest.mark.parametrize("mode_specific", [False, True])
def test_an_optimal_sigma_is_the_columns_root_mean_squared_error(mode_specific):
    """Each training batch moves the estimate towards its own mean squared error (for the
    first 1 / momentum batches their cumulative mean), over the rows where the value is
    present; evaluation leaves it as it is."""
    table = load_table(_frame(), mode_specific=mode_specific)
    likelihood = Mixed(table.sample_shape, table.schema).double()
    # the sigmas are set, not learned: the only parameter is the count's dispersion
    assert [name for name, _ in likelihood.named_parameters()] == [
        "columns.3.distribution.log_dispersion"]
    x = torch.from_numpy(table.schema.encode(_frame(), np.float64))
    gen = torch.Generator().manual_seed(2)
    params = [torch.randn(len(x), table.schema.width, generator=gen, dtype=torch.float64)
              for _ in range(2)]
    first, second = (_rms_errors(likelihood, p, x) for p in params)
    assert set(first) == {"size", "day"}
    for p in params:
        likelihood.train().nll(p, x)
    sigmas = _optimal_sigmas(likelihood)
    for name, error in first.items():  # a cumulative mean of the two batches
        assert sigmas[name] ** 2 == pytest.approx((error**2 + second[name] ** 2) / 2, rel=1e-6)
    likelihood.eval().nll(params[0], x)
    assert _optimal_sigmas(likelihood) == sigmas
    for _ in range(200):  # the same batch again and again: its own error
        likelihood.train().nll(params[1], x)
    for name, sigma in _optimal_sigmas(likelihood).items():
        assert sigma == pytest.approx(second[name], rel=1e-6)


def test_learned_sigmas_stay_reachable_and_bad_sigmas_are_refused():
    table = load_table(_frame())
    kwargs = {**table.likelihood_kwargs, "column_sigma": "learned"}
    model = VAE(**{**table.model_options(), "likelihood_kwargs": kwargs}, **SMALL)
    gaussian = model.likelihood.columns[0].distribution
    assert gaussian.mode == "learned" and gaussian.sigma.item() == pytest.approx(1, abs=2e-3)
    assert VAE(**table.model_options(), **SMALL).likelihood.column_sigma == "conditional"
    # a config without the key (saved before it was written) keeps independent sigmas
    schema_only = {"likelihood_kwargs": {"table": table.schema.to_dict()}}
    assert VAE(**{**table.model_options(), **schema_only}, **SMALL).likelihood.column_sigma \
        == "optimal"
    with pytest.raises(ValidationError, match="column_sigma must be one of"):
        VAE(**{**table.model_options(), "likelihood_kwargs": {**kwargs, "column_sigma": "fixed"}})


def test_means_and_draws_decode_to_the_table():
    table, likelihood, params, _ = _table_and_params()
    for rows in (likelihood.mean(params), likelihood.sample(params)):
        assert rows.shape == params.shape
        frame = table.schema.decode(rows)
        assert list(frame.columns) == list(_frame().columns)
        assert set(frame["colour"].dropna()) <= {"red", "green", "blue"}
    drawn = likelihood.sample(params)
    likelihood.check_support(ArrayData(drawn.float()))  # a draw is a valid encoded row


def test_rows_that_are_not_the_tables_encoding_are_refused():
    table, likelihood, _, x = _table_and_params()
    bad = x.clone()
    _, block, _ = table.schema.blocks()[1]
    bad[2, block] = 0.5
    with pytest.raises(ValueError, match="'colour' of row 2"):
        likelihood.check_support(ArrayData(bad, name="train data"))


def test_config_refuses_a_mixed_likelihood_without_its_table():
    table = load_table(_frame())
    with pytest.raises(ValidationError, match="likelihood_kwargs"):
        VAE(input_dim=table.sample_shape, likelihood="mixed")
    with pytest.raises(ValidationError, match="input_dim must be"):
        VAE(input_dim=(3,), likelihood="mixed", likelihood_kwargs=table.likelihood_kwargs)
    with pytest.raises(ValidationError, match="takes no likelihood_kwargs"):
        VAE(input_dim=(3,), likelihood="gaussian", likelihood_kwargs=table.likelihood_kwargs)


def test_the_history_shows_each_columns_nll():
    table = load_table(_frame(n=60))
    model = VAE(**table.model_options(), **SMALL)
    history = Trainer(model, TrainerConfig(epochs=1, batch_size=16, progress=False,
                                           device="cpu")).fit(table)
    record = history[0]
    parts = {key: value for key, value in record.items() if key.startswith("train_nll_")}
    assert "train_nll_size:missing" in parts and "train_nll_day" in parts
    assert sum(parts.values()) == pytest.approx(record["train_recon"], rel=1e-5)


@pytest.mark.parametrize("mode_specific", [False, True])
def test_a_numeric_columns_density_integrates_to_at_most_one(mode_specific):
    """In the column's own units: exactly one when standardized (the Jacobian is right), at
    most one under TVAE's mode-specific normalization (its mass on mismatched modes is lost)."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-3, 0.5, 300), rng.normal(4, 1.5, 300)])
    schema = load_table(pd.DataFrame({"v": values}), mode_specific=mode_specific).schema
    likelihood = Mixed((schema.width,), schema).double()
    grid = np.linspace(-40, 40, 80001)
    rows = torch.from_numpy(schema.encode(pd.DataFrame({"v": grid}), np.float64))
    params = torch.randn(1, schema.width, generator=torch.Generator().manual_seed(3),
                         dtype=torch.float64).expand(len(grid), -1)
    density = torch.exp(-likelihood.nll(params, rows)).detach().numpy()
    mass = float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(grid)))
    if mode_specific:
        assert schema.columns[0].value_width > 2 and 0.3 < mass <= 1 + 1e-6
    else:
        assert mass == pytest.approx(1, abs=1e-4)


def test_mode_specific_normalization_round_trips_and_scores_each_part():
    frame = _frame()
    table = load_table(frame, mode_specific=True)
    pd.testing.assert_frame_equal(table.to_frame(), frame)
    column, block, _ = table.schema.blocks()[0]
    likelihood = Mixed(table.sample_shape, table.schema).double()
    x = torch.from_numpy(table.schema.encode(frame, np.float64))
    params = torch.randn(len(x), table.schema.width, dtype=torch.float64)
    mode = x[:, block][:, 1:].argmax(1)
    alpha_sigma = likelihood.columns[0].distribution.alpha.sigma
    expected = (-D.Categorical(logits=params[:, block][:, 1:]).log_prob(mode)
                - D.Normal(params[:, block.start], alpha_sigma).log_prob(x[:, block.start])
                + torch.log(4 * torch.tensor(column.mode_stds, dtype=torch.float64)[mode]))
    present = x[:, block][:, 1:].sum(1) == 1
    torch.testing.assert_close(likelihood.parts(params, x)["size"],
                               torch.where(present, expected, 0.0))


def _start_scales(frame, **options):
    table = load_table(frame, **options)
    return VAE(**table.model_options(), **SMALL).likelihood.columns


def test_scales_start_at_the_columns_marginal_spread():
    """A count's dispersion starts at its mean and variance's, mean^2 / (var - mean) (or
    1e4 where the variance is below the mean); a mode-specific alpha's sigma at 1/4, the
    std of alpha within its mode (plus the soft floor of learned sigmas, 1e-3)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"proline": rng.poisson(rng.gamma(6, 120, 500)),
                          "x": np.linspace(0.5, 9.5, 500)})
    counts, numeric = _start_scales(frame, kinds={"proline": "negative_binomial"},
                                    mode_specific=True)
    mean, var = frame["proline"].mean(), frame["proline"].var(ddof=0)
    assert counts.distribution.log_dispersion.exp().item() == pytest.approx(
        mean**2 / (var - mean), rel=1e-5)
    assert numeric.distribution.alpha.sigma.item() == pytest.approx(0.25, abs=2e-3)
    narrow = pd.DataFrame({"k": np.arange(40) % 3 + 20, "x": np.linspace(0.5, 1.5, 40)})
    counts, _ = _start_scales(narrow, kinds={"k": "count"})
    assert counts.distribution.log_dispersion.exp().item() == pytest.approx(1e4)


def _correlated(n=300, seed=0):
    """Three correlated numbers (one with missing values, left out of the joint Gaussian), a
    date and a category."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=n)
    frame = pd.DataFrame({
        "height": 170 + 10 * base, "weight": 70 + 8 * base + 3 * rng.normal(size=n),
        "grip": 40 + 5 * base + rng.normal(size=n),
        "kind": rng.choice(["a", "b"], n),
        "day": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n), "D")})
    frame.loc[::11, "grip"] = np.nan
    return frame


def test_joint_numbers_score_the_chain_rule_of_their_multivariate_gaussian():
    """In evaluation, the joint columns' parts, summed over the first j, are -log of the
    first j columns' marginal under torch's MultivariateNormal (plus the standardizations'
    log scales); the other columns' parts are as with independent sigmas."""
    table = load_table(_correlated())
    joint = Mixed(table.sample_shape, table.schema, column_sigma="joint").double()
    alone = Mixed(table.sample_shape, table.schema).double()
    names = ["height", "weight", "day"]  # grip has missing values
    entries = [table.schema.blocks()[i][1].start for i in (0, 1, 4)]
    assert joint.joint_entries.tolist() == entries
    gen = torch.Generator().manual_seed(0)
    factor = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        joint.joint.running_moments.copy_(factor @ factor.T + 0.5 * torch.eye(3))
    covariance = joint.joint.covariance + 1e-6 * torch.eye(3, dtype=torch.float64)
    x = torch.from_numpy(table.schema.encode(_correlated(), np.float64))
    params = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    parts = joint.eval().parts(params, x)
    scales = [table.schema.columns[i].scale for i in (0, 1, 4)]
    for j in range(1, 4):
        marginal = D.MultivariateNormal(params[:, entries[:j]], covariance[:j, :j])
        want = -marginal.log_prob(x[:, entries[:j]]) + sum(np.log(scales[:j]))
        torch.testing.assert_close(sum(parts[name] for name in names[:j]), want)
    for name, part in alone.eval().parts(params, x).items():
        if name not in names:
            torch.testing.assert_close(parts[name], part)


def test_joint_covariance_is_the_residuals_and_draws_keep_it():
    table = load_table(_correlated())
    joint = Mixed(table.sample_shape, table.schema, column_sigma="joint").double()
    x = torch.from_numpy(table.schema.encode(_correlated(), np.float64))
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(x.shape, generator=gen, dtype=torch.float64) * 0.3 for _ in range(2)]
    entries = joint.joint_entries
    residuals = [(x - p)[:, entries] for p in batches]
    alone = Mixed(table.sample_shape, table.schema).double()
    for p in batches:  # in training, each number alone at Sigma_jj, the estimate before it
        torch.testing.assert_close(joint.train().parts(p, x), alone.train().parts(p, x),
                                   rtol=1e-5, atol=1e-5)  # floors: + 1e-6, and max(., 1e-6)
    want = sum(r.T @ r / len(r) for r in residuals) / 2  # the cumulative mean of two batches
    torch.testing.assert_close(joint.joint.covariance, want)
    sigmas = [alone.columns[i].distribution.sigma.item() for i in (0, 1, 4)]
    torch.testing.assert_close(joint.joint.sigma, torch.tensor(sigmas, dtype=torch.float64))
    torch.manual_seed(0)
    mean = torch.zeros(20000, x.shape[1], dtype=torch.float64)
    draws = joint.eval().sample(mean)[:, entries]
    torch.testing.assert_close(draws.T.cov(), want, atol=0.05, rtol=0.05)
    assert draws.T.corrcoef()[0, 1] > 0.5  # height and weight stay correlated


def test_joint_model_saves_and_loads(tmp_path):
    table = load_table(_correlated())
    kwargs = {**table.likelihood_kwargs, "column_sigma": "joint"}
    model = VAE(**{**table.model_options(), "likelihood_kwargs": kwargs}, **SMALL)
    Trainer(model, TrainerConfig(epochs=2, batch_size=64, progress=False)).fit(table)
    model.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.likelihood.column_sigma == "joint"
    torch.testing.assert_close(loaded.likelihood.joint.covariance,
                               model.likelihood.joint.covariance)
    assert not torch.equal(model.likelihood.joint.covariance, torch.eye(3))
    torch.manual_seed(3)
    first = loaded.generate(50)
    torch.manual_seed(3)
    assert first.equals(model.generate(50))


def _with_counts(n=300, seed=0):
    """Two correlated counts in the tens and a number."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=n)
    return pd.DataFrame({"visits": np.round(60 + 12 * base + 3 * rng.normal(size=n)).astype(int),
                         "calls": np.round(40 + 8 * base + 2 * rng.normal(size=n)).astype(int),
                         "height": 170 + 10 * base + rng.normal(size=n)})


def test_a_dequantized_count_bounds_its_probability_from_above():
    """Averaged over its uniform noise, a dequantized count's part is at least -log P(k),
    P(k) the Gaussian's mass on (k - 1/2, k + 1/2) in the count's units, and close to it for a
    count spread over many whole numbers."""
    frame = _with_counts()
    table = load_table(frame, kinds={"visits": "dequantized_gaussian"})
    column = table.schema.columns[0]
    assert (column.kind, column.likelihood) == ("count", "dequantized_gaussian")
    likelihood = Mixed(table.sample_shape, table.schema).double().eval()
    x = torch.from_numpy(table.schema.encode(frame, np.float64))
    params = torch.randn(x.shape, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64) * 0.5
    torch.manual_seed(0)
    draws = [likelihood.parts(params, x)["visits"] for _ in range(4000)]
    mean_part = torch.stack(draws).mean(0)
    sigma = likelihood.columns[0].distribution.sigma.item() * column.scale  # in counts
    normal = D.Normal(params[:, 0] * column.scale + column.center, sigma)
    k = torch.from_numpy(frame["visits"].to_numpy(np.float64))
    mass = normal.cdf(k + 0.5) - normal.cdf(k - 0.5)
    assert bool((mean_part >= -mass.log() - 1e-3).all())
    torch.testing.assert_close(mean_part, -mass.log(), atol=1e-2, rtol=0)  # Monte Carlo


def test_dequantized_counts_join_the_covariance_and_decode_to_whole_numbers():
    frame = _with_counts()
    kinds = {"visits": "dequantized_gaussian", "calls": "dequantized_gaussian"}
    table = load_table(frame, kinds=kinds)
    model = VAE(**table.model_options(), **SMALL)
    assert model.likelihood.joint_entries.tolist() == [0, 1, 2]
    Trainer(model, TrainerConfig(epochs=3, batch_size=100, progress=False)).fit(table)
    assert model.likelihood.joint.covariance[0, 1] > 0.3  # the counts' correlation
    generated = model.generate(400)
    for name in ("visits", "calls"):
        assert generated[name].dtype == frame[name].dtype and (generated[name] >= 0).all()
    assert np.corrcoef(generated["visits"], generated["calls"])[0, 1] > 0.5
    with pytest.raises(ValueError, match="whole numbers|count"):
        load_table(frame, kinds={"height": "dequantized_gaussian"})


def test_conditional_numbers_regress_on_the_rows_categories():
    """column_sigma="conditional": evaluation scores the numbers by N(mu + d B, Sigma), d =
    [the row's one-hot categories, 1], B the least-squares regression of the residuals on d
    and Sigma what it leaves; draws take the categories first, so class means come back."""
    rng = np.random.default_rng(0)
    n = 400
    kind = rng.choice(["a", "b"], n)
    shift = np.where(kind == "a", 0.0, 30.0)
    base = rng.normal(size=n)
    frame = pd.DataFrame({"height": 170 + shift + 5 * base,
                          "weight": 70 + shift / 2 + 4 * base + rng.normal(size=n),
                          "kind": kind})
    table = load_table(frame)
    likelihood = Mixed(table.sample_shape, table.schema, column_sigma="conditional").double()
    assert likelihood.given_entries.tolist() == [2, 3]
    x = torch.from_numpy(table.schema.encode(frame, np.float64))
    params = torch.zeros_like(x)
    likelihood.train().nll(params, x)  # one batch: the moments are this batch's
    design = torch.cat([x[:, 2:4], torch.ones(n, 1, dtype=x.dtype)], 1)
    residual = x[:, :2]
    fitted = design @ torch.linalg.lstsq(design, residual).solution
    joint = likelihood.joint
    torch.testing.assert_close(design @ joint.regression()[0], fitted, atol=1e-5, rtol=0)
    left = residual - fitted
    torch.testing.assert_close(joint.covariance, left.T @ left / n, atol=1e-5, rtol=0)
    parts = likelihood.eval().parts(params, x)
    normal = D.MultivariateNormal(design @ joint.regression()[0],  # the fit above, to 1e-5
                                  joint.covariance + 1e-6 * torch.eye(2, dtype=x.dtype))
    scales = sum(np.log(table.schema.columns[i].scale) for i in (0, 1))
    torch.testing.assert_close(parts["height"] + parts["weight"],
                               -normal.log_prob(residual) + scales)
    torch.manual_seed(0)
    drawn = table.schema.decode(likelihood.sample(torch.zeros(4000, x.shape[1],
                                                              dtype=x.dtype)))
    gap = drawn.groupby("kind")["height"].mean()
    assert gap["b"] - gap["a"] == pytest.approx(30, abs=1.5)
