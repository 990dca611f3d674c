import math

import pytest
import torch

from vaebench.quantizers import (
    FiniteScalarQuantizer,
    GumbelQuantizer,
    LookupFreeQuantizer,
    ResidualQuantizer,
    VectorQuantizer,
    codebook_usage,
)


def _rows(z):
    """(B, D, h, w) -> (B, h * w, D)."""
    return z.flatten(2).transpose(1, 2)


def test_vq_terms_and_codes_equal_an_independent_computation():
    vq = VectorQuantizer(12, 3)
    torch.nn.init.normal_(vq.embedding)
    z = torch.randn(5, 3, 4, 2, requires_grad=True)
    q = vq(z)
    codebook = vq.embedding.detach()
    # nearest code by brute force, then the per-sample sums written out
    rows = _rows(z.detach())
    distances = ((rows.unsqueeze(2) - codebook) ** 2).sum(-1)  # (B, 8, K)
    expected_indices = distances.argmin(-1)
    assert torch.equal(q.indices.flatten(1), expected_indices)
    selected = codebook[expected_indices]  # (B, 8, D)
    squared = ((rows - selected) ** 2).sum((1, 2))
    torch.testing.assert_close(q.terms["codebook"], squared)
    torch.testing.assert_close(q.terms["commitment"], squared)
    assert set(q.terms) == {"codebook", "commitment"}
    assert all(t.shape == (5,) for t in q.terms.values())
    # the forward value is the selected codes; the gradient to z is the identity
    torch.testing.assert_close(_rows(q.quantized.detach()), selected)
    torch.testing.assert_close(vq.codes_from_indices(q.indices), q.quantized.detach())
    g = torch.randn_like(z)
    (q.quantized * g).sum().backward()
    torch.testing.assert_close(z.grad, g)
    assert vq.embedding.grad is None


def test_vq_codebook_term_trains_only_the_codebook_and_commitment_only_z():
    vq = VectorQuantizer(8, 2)
    z = torch.randn(3, 2, 3, 3, requires_grad=True)
    q = vq(z)
    grads = torch.autograd.grad(q.terms["codebook"].sum(), [z, vq.embedding], allow_unused=True)
    assert grads[0] is None and grads[1].abs().sum() > 0
    grads = torch.autograd.grad(q.terms["commitment"].sum(), [z, vq.embedding],
                                allow_unused=True)
    assert grads[0].abs().sum() > 0 and grads[1] is None
    # d/dz sum ||z - sg[e]||^2 = 2 (z - e)
    torch.testing.assert_close(grads[0], 2 * (z - q.quantized).detach())


def test_ema_update_equals_its_formula_on_a_hand_made_example():
    decay, eps = 0.5, 0.1
    vq = VectorQuantizer(3, 2, ema=True, decay=decay, epsilon=eps)
    assert not any(True for _ in vq.parameters())  # the codebook is a buffer
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    with torch.no_grad():
        vq.embedding.copy_(codebook)
        vq.ema_embed_sum.copy_(codebook)
        vq.ema_cluster_size.fill_(1.0)
    # four vectors at one sample's 1 x 4 grid: two near code 0, two near code 1, none near 2
    z = torch.tensor([[1.0, -1.0, 9.0, 11.0], [1.0, 0.0, 1.0, -1.0]]).view(1, 2, 1, 4)
    vq.train()
    q = vq(z)
    assert q.indices.flatten().tolist() == [0, 0, 1, 1]
    assert set(q.terms) == {"commitment"}
    # output and commitment with the codebook before the update: 2 + 1 + 2 + 2
    torch.testing.assert_close(q.quantized, codebook[[0, 0, 1, 1]].t().reshape(1, 2, 1, 4))
    torch.testing.assert_close(q.terms["commitment"], torch.tensor([7.0]))
    # N <- 0.5 N + 0.5 n with n = (2, 2, 0); m <- 0.5 m + 0.5 * (sum of assigned vectors)
    n_new = [0.5 * 1 + 0.5 * 2, 0.5 * 1 + 0.5 * 2, 0.5 * 1 + 0.5 * 0]
    m_new = [[0.5 * 0 + 0.5 * (1 - 1), 0.5 * 0 + 0.5 * (1 + 0)],
             [0.5 * 10 + 0.5 * (9 + 11), 0.5 * 0 + 0.5 * (1 - 1)],
             [0.5 * 0, 0.5 * 10]]
    total = sum(n_new)
    smoothed = [(n + eps) / (total + 3 * eps) * total for n in n_new]
    expected = [[m / s for m in row] for row, s in zip(m_new, smoothed, strict=True)]
    torch.testing.assert_close(vq.ema_cluster_size, torch.tensor(n_new))
    torch.testing.assert_close(vq.ema_embed_sum, torch.tensor(m_new))
    torch.testing.assert_close(vq.embedding, torch.tensor(expected))
    assert vq.embedding[2, 1] == pytest.approx(5 / (0.6 * 3.5 / 3.8))


@pytest.mark.parametrize("kmeans_init", [False, True])
def test_state_changes_only_in_training_steps(kmeans_init):
    for ema in (False, True):
        vq = VectorQuantizer(4, 2, ema=ema, restart_dead_codes=True, dead_after=1,
                             kmeans_init=kmeans_init)
        before = {k: v.clone() for k, v in vq.state_dict().items()}
        z = torch.randn(6, 2, 3, 3)
        vq.eval()
        vq(z)
        vq.train()
        with torch.no_grad():
            vq(z)
        assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())
        assert int(vq.code_counts.sum()) == 0
        vq(z)  # a training step
        assert int(vq.code_counts.sum()) == 6 * 9
        assert not all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


def test_usage_and_perplexity_on_a_hand_made_assignment():
    vq = VectorQuantizer(4, 2)
    with torch.no_grad():
        vq.embedding.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    # one sample, positions exactly at codes 0, 0, 1, 3: counts (2, 1, 0, 1)
    z = vq.embedding.detach()[[0, 0, 1, 3]].t().reshape(1, 2, 2, 2)
    vq.train()
    assert vq(z).indices.flatten().tolist() == [0, 0, 1, 3]
    metrics = vq.usage_metrics()
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert metrics["usage"] == pytest.approx(0.75)
    assert metrics["perplexity"] == pytest.approx(math.exp(entropy))
    assert metrics["perplexity"] == pytest.approx(2**1.5)
    usage, perplexity = codebook_usage(torch.tensor([5, 5, 5, 5, 0, 0, 0, 0]))
    assert usage == 0.5 and perplexity == pytest.approx(4.0)
    vq.reset_usage()
    assert math.isnan(vq.usage_metrics()["usage"])


@pytest.mark.parametrize("ema", [False, True])
def test_dead_code_restart_raises_usage_after_a_bad_initialisation(ema):
    def usage(restart):
        torch.manual_seed(0)
        vq = VectorQuantizer(32, 4, ema=ema, restart_dead_codes=restart, dead_after=2,
                             restart_buffer_size=256)
        with torch.no_grad():  # every code far from the data: one code takes everything
            vq.embedding.copy_(10.0 + 0.01 * torch.randn(32, 4))
            if ema:
                vq.ema_embed_sum.copy_(vq.embedding)
        vq.train()
        for _ in range(4):
            vq(torch.randn(16, 4, 4, 4))
        vq.reset_usage()
        vq(torch.randn(16, 4, 4, 4))
        return vq.usage_metrics()["usage"]

    without, with_restart = usage(False), usage(True)
    assert without <= 2 / 32
    assert with_restart >= 0.75


def test_restart_moves_dead_codes_onto_recent_encoder_outputs():
    vq = VectorQuantizer(8, 3, restart_dead_codes=True, dead_after=1, restart_buffer_size=64)
    with torch.no_grad():
        vq.embedding.copy_(torch.full((8, 3), 50.0))
        vq.embedding[0] = 0.0
    vq.train()
    z = torch.randn(2, 3, 4, 4)
    q = vq(z)  # all positions take code 0; codes 1..7 unused once, restarted after the step
    assert q.indices.eq(0).all() and q.quantized.detach().eq(0).all()
    torch.testing.assert_close(q.terms["commitment"], (z**2).sum((1, 2, 3)))
    rows = _rows(z).reshape(-1, 3)
    assert torch.equal(vq.embedding.detach()[0], torch.zeros(3))
    for code in vq.embedding.detach()[1:]:
        assert ((rows - code).abs().sum(1) < 1e-6).any()
    assert vq.usage_metrics()["restarts"] == 7


def _residual_reference(rq, z):
    """Residual quantization written out: indices, summed terms, and the sum of codes."""
    residual = _rows(z.detach())
    total = torch.zeros_like(residual)
    squared = torch.zeros(z.shape[0])
    indices = []
    for level in rq.levels:
        codebook = level.embedding.detach()
        index = ((residual.unsqueeze(2) - codebook) ** 2).sum(-1).argmin(-1)
        codes = codebook[index]
        squared += ((residual - codes) ** 2).sum((1, 2))
        total, residual = total + codes, residual - codes
        indices.append(index)
    return torch.stack(indices, 1), squared, total


def test_residual_quantizer_equals_an_independent_computation():
    rq = ResidualQuantizer(3, 6, 2)
    for level in rq.levels:
        torch.nn.init.normal_(level.embedding)
    z = torch.randn(4, 2, 3, 3, requires_grad=True)
    q = rq(z)
    indices, squared, total = _residual_reference(rq, z)
    assert q.indices.shape == (4, 3, 3, 3)
    assert torch.equal(q.indices.flatten(2), indices)
    torch.testing.assert_close(q.terms["codebook"], squared)
    torch.testing.assert_close(q.terms["commitment"], squared)
    torch.testing.assert_close(_rows(q.quantized.detach()), total)
    torch.testing.assert_close(rq.codes_from_indices(q.indices), q.quantized.detach())
    # codebook term: every level's codebook, never z; commitment: z only
    params = [z, *(level.embedding for level in rq.levels)]
    grads = torch.autograd.grad(q.terms["codebook"].sum(), params, allow_unused=True)
    assert grads[0] is None and all(g.abs().sum() > 0 for g in grads[1:])
    grads = torch.autograd.grad(q.terms["commitment"].sum(), params, allow_unused=True)
    assert grads[0].abs().sum() > 0 and all(g is None for g in grads[1:])
    # commitment = sum_l ||z - sg[e_1 + ... + e_l]||^2
    partial = torch.zeros_like(_rows(z.detach()))
    cumulative = torch.zeros(4)
    for level, index in zip(rq.levels, indices.unbind(1), strict=True):
        partial = partial + level.embedding.detach()[index]
        cumulative += ((_rows(z.detach()) - partial) ** 2).sum((1, 2))
    torch.testing.assert_close(q.terms["commitment"], cumulative)


def test_residual_usage_is_reported_per_level_and_averaged():
    rq = ResidualQuantizer(2, 4, 2)
    rq.train()
    rq(torch.randn(3, 2, 2, 2))
    metrics = rq.usage_metrics()
    assert {"usage", "perplexity", "usage_1", "usage_2", "perplexity_2"} <= set(metrics)
    assert metrics["usage"] == pytest.approx((metrics["usage_1"] + metrics["usage_2"]) / 2)


def test_fsq_index_code_round_trip():
    fsq = FiniteScalarQuantizer((8, 5, 3))
    assert fsq.num_codes == 120
    indices = torch.arange(120)
    codes = fsq.normalized_codes(indices)
    assert codes.shape == (120, 3) and codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(fsq.indices_from_codes(codes), indices)
    assert len({tuple(c.tolist()) for c in codes}) == 120
    # the first channel is the least significant digit
    assert fsq.digits_from_indices(torch.tensor(8 + 8 * 5 * 2)).tolist() == [0, 1, 2]


def test_fsq_rounds_each_channel_to_its_levels_with_straight_through_gradient():
    levels = (8, 5, 3)
    fsq = FiniteScalarQuantizer(levels)
    z = torch.linspace(-6, 6, 200).repeat(1, 3, 1).requires_grad_(True)  # (1, 3, 200)
    q = fsq(z)
    assert q.terms == {}
    for channel, n in enumerate(levels):
        values = q.quantized[0, channel].detach().unique()
        half = n // 2
        assert torch.allclose(values, (torch.arange(n) - half).float() / half)
    torch.testing.assert_close(fsq.codes_from_indices(q.indices), q.quantized.detach())
    assert torch.equal(q.indices, fsq.indices_from_codes(q.quantized.detach().movedim(1, -1)))
    q.quantized.sum().backward()
    # straight-through: the gradient is that of the bound, d/dz h tanh(z + s) / floor(L/2)
    assert (z.grad > 0).all()
    assert fsq(torch.zeros(1, 3, 1)).quantized.abs().max() == 0  # 0 maps to 0


def test_fsq_projects_other_widths():
    fsq = FiniteScalarQuantizer((4, 4), dim=6)
    z = torch.randn(2, 6, 3, 3)
    q = fsq(z)
    assert q.quantized.shape == z.shape and q.indices.shape == (2, 3, 3)
    assert q.indices.max() < 16
    torch.testing.assert_close(fsq.codes_from_indices(q.indices), q.quantized.detach())
    with pytest.raises(ValueError, match="levels"):
        FiniteScalarQuantizer((1, 4))


@pytest.mark.parametrize("make", [
    lambda: VectorQuantizer(16, 4),
    lambda: VectorQuantizer(16, 4, ema=True),
    lambda: VectorQuantizer(16, 4, cosine=True, rotation_trick=True),
    lambda: ResidualQuantizer(3, 16, 4),
    lambda: FiniteScalarQuantizer((5, 5, 5, 5)),
    lambda: LookupFreeQuantizer(4),
    lambda: GumbelQuantizer(4, 3),
])
def test_quantizer_terms_are_batch_size_invariant(make):
    quantizer = make().eval()
    z = torch.randn(64, 4, 5, 5)
    small, large = quantizer(z[:8]), quantizer(z)
    torch.testing.assert_close(small.quantized, large.quantized[:8])
    assert torch.equal(small.indices, large.indices[:8])
    for name, term in small.terms.items():
        if name != "batch_entropy":  # LFQ's minibatch quantity (test_quantizer_techniques)
            torch.testing.assert_close(term, large.terms[name][:8])


def _ema_step(cluster_size, embed_sum, rows, index, decay, epsilon):
    """One EMA codebook step written out (van den Oord et al. 2017, Appendix A.1): the new
    cluster sizes N, sums m and codebook m / N~ with Laplace-smoothed sizes N~."""
    one_hot = torch.nn.functional.one_hot(index, cluster_size.shape[0]).to(rows.dtype)
    sizes = decay * cluster_size + (1 - decay) * one_hot.sum(0)
    sums = decay * embed_sum + (1 - decay) * one_hot.t() @ rows
    n = sizes.sum()
    smoothed = (sizes + epsilon) / (n + cluster_size.shape[0] * epsilon) * n
    return sizes, sums, sums / smoothed.unsqueeze(1)


def test_residual_ema_training_step_uses_the_codebooks_from_before_the_step():
    decay, epsilon, dim = 0.6, 1e-3, 2
    rq = ResidualQuantizer(3, 5, dim, ema=True, decay=decay, epsilon=epsilon)
    with torch.no_grad():
        for level in rq.levels:
            level.embedding.normal_()
            level.ema_embed_sum.normal_()
            level.ema_cluster_size.uniform_(0.5, 2.0)
    old = [{name: buffer.clone() for name, buffer in level.named_buffers()}
           for level in rq.levels]
    z = torch.randn(4, dim, 3, 3, requires_grad=True)
    rq.train()
    q = rq(z)
    residual = _rows(z.detach()).reshape(-1, dim)  # (4 * 9, D), sample-major
    total = torch.zeros_like(residual)
    commitment = torch.zeros(4)
    for depth, (level, before) in enumerate(zip(rq.levels, old, strict=True)):
        codebook = before["embedding"]
        index = ((residual.unsqueeze(1) - codebook) ** 2).sum(-1).argmin(-1)
        assert torch.equal(q.indices[:, depth].flatten(), index)
        codes = codebook[index]
        commitment += ((residual - codes) ** 2).view(4, -1).sum(1)
        sizes, sums, updated = _ema_step(before["ema_cluster_size"], before["ema_embed_sum"],
                                         residual, index, decay, epsilon)
        torch.testing.assert_close(level.ema_cluster_size, sizes)
        torch.testing.assert_close(level.ema_embed_sum, sums)
        torch.testing.assert_close(level.embedding, updated)
        assert not torch.allclose(updated, codebook)  # the two states differ
        total, residual = total + codes, residual - codes
    torch.testing.assert_close(_rows(q.quantized.detach()).reshape(-1, dim), total)
    torch.testing.assert_close(q.terms["commitment"], commitment)
    assert set(q.terms) == {"commitment"}
    g = torch.randn_like(z)
    (q.quantized * g).sum().backward()
    torch.testing.assert_close(z.grad, g)  # straight-through


def test_residual_restarts_act_from_the_next_step_on():
    rq = ResidualQuantizer(2, 4, 2, ema=True, restart_dead_codes=True, dead_after=1)
    with torch.no_grad():
        for level in rq.levels:  # code 0 at the origin, the others far away: all dead
            level.embedding.fill_(50.0)
            level.embedding[0] = 0.0
            level.ema_embed_sum.copy_(level.embedding)
    rq.train()
    z = torch.randn(3, 2, 2, 2)
    q = rq(z)
    assert q.indices.eq(0).all() and q.quantized.detach().eq(0).all()
    torch.testing.assert_close(q.terms["commitment"], 2 * (z**2).sum((1, 2, 3)))
    assert rq.usage_metrics()["restarts"] == 2 * 3
    assert all((level.embedding[1:] < 50).all() for level in rq.levels)
