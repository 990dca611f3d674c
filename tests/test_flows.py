"""vaebench.flows: log-determinants against autograd Jacobians, inverses, the paper formulas,
MADE's autoregressive masks and MAF's density."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian
from torch.distributions import Independent, Normal

from vaebench.flows import (
    IAF,
    MADE,
    MAF,
    FlowDistribution,
    FlowSequence,
    IAFStep,
    MAFLayer,
    PlanarFlow,
    RadialFlow,
)

DIM, CONTEXT = 4, 3


def jacobian_log_dets(flow, z, context=None):
    """log |det dflow(z)/dz| of each row of z (N, D), from the full autograd Jacobian."""
    def one(i):
        ctx = None if context is None else context[i:i + 1]
        jac = jacobian(lambda v: flow(v.unsqueeze(0), ctx)[0][0], z[i])
        return torch.linalg.slogdet(jac).logabsdet
    return torch.stack([one(i) for i in range(z.shape[0])])


def _randomized(flow, scale=1.0):
    """The flow with every parameter redrawn, so no factor sits at its identity init."""
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.normal_(0.0, scale)
    return flow


def _flows():
    """(name, flow in float64, context width) of every kind, with non-trivial parameters."""
    return {
        "planar": (_randomized(PlanarFlow(DIM)), 0),
        "radial": (_randomized(RadialFlow(DIM)), 0),
        "maf_layer": (MAFLayer(DIM, [16, 16], CONTEXT, order=[2, 4, 1, 3]), CONTEXT),
        "iaf_step": (IAFStep(DIM, [16], CONTEXT), CONTEXT),
        "maf": (MAF(DIM, 3, [16]), 0),
        "iaf": (IAF(DIM, 3, [16, 16], CONTEXT), CONTEXT),
        "sequence": (FlowSequence([_randomized(PlanarFlow(DIM)), _randomized(RadialFlow(DIM)),
                                   IAFStep(DIM, [16], CONTEXT)]), CONTEXT),
    }


INVERTIBLE = ["radial", "maf_layer", "iaf_step", "maf", "iaf"]


def _inputs(context_dim, n=5):
    z = torch.randn(n, DIM, dtype=torch.float64)
    context = torch.randn(n, context_dim, dtype=torch.float64) if context_dim else None
    return z, context


@pytest.mark.parametrize("name", list(_flows()))
def test_log_det_equals_the_jacobian(name):
    flow, context_dim = _flows()[name]
    flow.double()
    z, context = _inputs(context_dim)
    z_new, log_det = flow(z, context)
    assert z_new.shape == z.shape and log_det.shape == (5,)
    torch.testing.assert_close(log_det, jacobian_log_dets(flow, z, context))


@pytest.mark.parametrize("name", INVERTIBLE)
def test_inverse_undoes_forward(name):
    flow, context_dim = _flows()[name]
    flow.double()
    z, context = _inputs(context_dim)
    z_new, log_det = flow(z, context)
    z_back, inverse_log_det = flow.inverse(z_new, context)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(inverse_log_det, -log_det)


@pytest.mark.parametrize("name", list(_flows()))
def test_flows_act_on_draws_of_a_batch(name):
    """Codes (k, N, D) with a context (N, C): each of the k slices as on its own."""
    flow, context_dim = _flows()[name]
    z = torch.randn(3, 5, DIM)
    context = torch.randn(5, context_dim) if context_dim else None
    z_new, log_det = flow(z, context)
    for j in range(3):
        z_j, log_det_j = flow(z[j], context)
        torch.testing.assert_close(z_new[j], z_j)
        torch.testing.assert_close(log_det[j], log_det_j)


def test_planar_flow_is_the_paper_formula():
    flow = _randomized(PlanarFlow(DIM))
    z = torch.randn(6, DIM)
    u, w, b = flow.u.detach(), flow.w.detach(), flow.b.detach()
    wu = w @ u
    u_hat = u + (-1 + math.log1p(math.exp(wu))) * w / (w @ w) - wu * w / (w @ w)
    expected = z + u_hat * torch.tanh(z @ w + b)[:, None]
    torch.testing.assert_close(flow(z)[0], expected)
    with pytest.raises(NotImplementedError, match="PlanarFlow"):
        flow.inverse(z)


@pytest.mark.parametrize("scale", [0.1, 10.0])
@pytest.mark.parametrize("wu", [-3.0, -12.0])
def test_planar_u_hat_keeps_the_flow_invertible(scale, wu):
    """w^T u_hat = -1 + softplus(w^T u) > -1 (Appendix A.1), also when w^T u << -1."""
    flow = _randomized(PlanarFlow(DIM), scale).double()
    with torch.no_grad():
        flow.u.copy_(wu * flow.w / (flow.w @ flow.w))  # non-invertible without the fix
        u_hat, wu_hat = flow.u_hat()
    assert float(wu_hat) > -1
    torch.testing.assert_close(flow.w @ u_hat, wu_hat)
    torch.testing.assert_close(wu_hat, F.softplus(torch.tensor(wu, dtype=torch.float64)) - 1)
    z = torch.randn(200, DIM, dtype=torch.float64) / scale
    assert torch.isfinite(flow.float()(z.float())[1]).all()


@pytest.mark.parametrize("beta_raw", [-30.0, 0.5, 3.0])
def test_radial_flow_is_the_paper_formula(beta_raw):
    flow = RadialFlow(DIM)
    with torch.no_grad():
        flow.alpha_raw.fill_(0.3)
        flow.beta_raw.fill_(beta_raw)
    alpha = math.log1p(math.exp(0.3))
    beta = -alpha + math.log1p(math.exp(beta_raw))
    assert beta > -alpha
    z = torch.randn(6, DIM)
    offset = z - flow.z0.detach()
    r = offset.norm(dim=1, keepdim=True)
    torch.testing.assert_close(flow(z)[0], z + beta / (alpha + r) * offset)


def test_radial_flow_starts_as_the_identity():
    z = torch.randn(6, DIM)
    z_new, log_det = RadialFlow(DIM)(z)
    torch.testing.assert_close(z_new, z)
    torch.testing.assert_close(log_det, torch.zeros(6))


def _allowed(order):
    order = torch.tensor(order)
    return order[None, :] < order[:, None]  # [i, j]: output i may depend on input j


@pytest.mark.parametrize("context_dim", [0, CONTEXT])
@pytest.mark.parametrize("order", [[1, 2, 3, 4, 5], [3, 1, 5, 2, 4]])
def test_made_is_autoregressive(order, context_dim):
    made = MADE(5, [20, 20], num_params=3, context_dim=context_dim, order=order).double()
    x = torch.randn(5, dtype=torch.float64)
    context = torch.randn(context_dim, dtype=torch.float64) if context_dim else None
    jac = torch.stack(jacobian(lambda v: made(v, context), x))  # (params, out i, in j)
    allowed = _allowed(order).expand_as(jac)
    assert (jac[~allowed] == 0).all()
    assert (jac[allowed] != 0).float().mean() > 0.5  # and the allowed paths are used
    if context_dim:  # every output sees the context, the first in the order too
        d_context = torch.stack(jacobian(lambda c: made(x, c), context))
        assert (d_context.abs().sum(-1) > 0).all()


def test_made_checks_its_inputs():
    with pytest.raises(ValueError, match="permutation of 1..3"):
        MADE(3, [8], order=[1, 1, 2])
    made = MADE(3, [8], context_dim=2)
    with pytest.raises(ValueError, match="context of 2 features, got none"):
        made(torch.randn(4, 3))
    with pytest.raises(ValueError, match="takes no context"):
        MADE(3, [8])(torch.randn(4, 3), torch.randn(4, 2))


def test_made_of_one_dimension_depends_on_the_context_only():
    made = MADE(1, [8], context_dim=2)
    shift, _ = made(torch.randn(4, 1), torch.zeros(4, 2))
    assert torch.allclose(shift, shift[0]) and not torch.allclose(
        made(torch.randn(4, 1), torch.randn(4, 2))[0], shift)


def test_maf_layer_and_iaf_step_are_the_paper_formulas():
    x, h = torch.randn(6, DIM), torch.randn(6, CONTEXT)
    layer = MAFLayer(DIM, [16], CONTEXT)
    mu, alpha = layer.made(x, h)
    u, log_det = layer(x, h)
    torch.testing.assert_close(u, (x - mu) * torch.exp(-alpha))  # Papamakarios et al., Sec. 3.1
    torch.testing.assert_close(log_det, -alpha.sum(1))
    step = IAFStep(DIM, [16], CONTEXT, gate_bias=1.5)
    m, s = step.made(x, h)
    sigma = torch.sigmoid(s + 1.5)
    z, log_det = step(x, h)
    torch.testing.assert_close(z, sigma * x + (1 - sigma) * m)  # Kingma et al., Algorithm 1
    torch.testing.assert_close(log_det, torch.log(sigma).sum(1))


def test_autoregressive_stacks_reverse_the_order():
    for flow in (MAF(3, 3, [8]), IAF(3, 3, [8])):
        assert [layer.made.order for layer in flow.flows] == [[1, 2, 3], [3, 2, 1], [1, 2, 3]]


def test_maf_log_prob_is_the_change_of_variables():
    maf = MAF(DIM, 2, [16], CONTEXT).double()
    x, h = _inputs(CONTEXT, n=6)
    u = maf(x, h)[0]
    base = Independent(Normal(torch.zeros(DIM, dtype=torch.float64), 1.0), 1)
    expected = base.log_prob(u) + jacobian_log_dets(maf, x, h)
    torch.testing.assert_close(maf.log_prob(x, h), expected)


def test_maf_density_integrates_to_one():
    torch.manual_seed(1)
    maf = MAF(2, 2, [16]).double()
    with torch.no_grad():  # a visibly non-Gaussian density
        maf.flows[0].made.output.weight.mul_(3.0)
    grid = torch.linspace(-12, 12, 601, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = maf.log_prob(points).exp()
    cell = float(grid[1] - grid[0]) ** 2
    assert float(density.sum()) * cell == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("context_dim", [0, CONTEXT])
def test_maf_sample_maps_back_to_its_noise(context_dim):
    maf = MAF(DIM, 3, [16], context_dim)
    h = torch.randn(7, context_dim) if context_dim else None
    torch.manual_seed(4)
    x = maf.sample(7, h)
    torch.manual_seed(4)
    noise = torch.randn(7, DIM)
    assert x.shape == (7, DIM) and not torch.allclose(x, noise)
    torch.testing.assert_close(maf(x, h)[0], noise, atol=1e-5, rtol=1e-5)


def test_flow_distribution_pushes_its_base_through_the_flow():
    class Base:
        mean = torch.zeros(5, DIM)

        def rsample(self, shape):
            return torch.ones(*shape, 5, DIM)

        def log_prob(self, z):
            return z.sum(-1)

    flow, h = IAF(DIM, 2, [8], CONTEXT), torch.randn(5, CONTEXT)
    q = FlowDistribution(Base(), flow, h)
    z, log_q = q.rsample_with_log_prob((3,))
    z_expected, log_det = flow(torch.ones(3, 5, DIM), h)
    torch.testing.assert_close(z, z_expected)
    torch.testing.assert_close(log_q, DIM - log_det)
    torch.testing.assert_close(q.mean, flow(torch.zeros(5, DIM), h)[0])
