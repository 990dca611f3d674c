"""The quantizer techniques of issue 15: k-means initialisation, the rotation trick, cosine
codebooks (options of VectorQuantizer), lookup-free quantization and Gumbel-softmax codes."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence

from vaebench import Trainer, TrainerConfig, create_model, load_model
from vaebench.data import load_dataset
from vaebench.metrics import reconstruction_mse
from vaebench.models import get_model_class
from vaebench.quantizers import (
    GumbelQuantizer,
    LookupFreeQuantizer,
    ResidualQuantizer,
    VectorQuantizer,
    rotate_onto,
)


def _rows(z):
    """(B, D, *grid) -> (B * positions, D), sample-major."""
    return z.movedim(1, -1).reshape(-1, z.shape[1])


def _grid(rows, batch, *grid):
    """Inverse of :func:`_rows`."""
    return rows.view(batch, *grid, rows.shape[1]).movedim(-1, 1)


def _is_kmeans_fixpoint(rows, centres):
    """Every centre with rows assigned to it is their mean (Lloyd's fixpoint)."""
    assignment = torch.cdist(rows, centres).argmin(1)
    used = assignment.unique()
    means = torch.stack([rows[assignment == k].mean(0) for k in used])
    return torch.allclose(centres[used], means, atol=1e-5)


# --- k-means initialisation -----------------------------------------------------------------

def _mixture(centres, per_cluster, spread=0.05):
    """Rows of a Gaussian mixture, shuffled, and each row's component."""
    labels = torch.arange(len(centres)).repeat_interleave(per_cluster)
    rows = centres[labels] + spread * torch.randn(len(labels), centres.shape[1])
    order = torch.randperm(len(labels))
    return rows[order], labels[order]


def test_kmeans_init_places_codes_at_the_centres_of_a_known_mixture():
    centres = 10.0 * torch.randn(6, 3)
    rows, labels = _mixture(centres, 40)
    z = _grid(rows, 15, 4, 4)
    vq = VectorQuantizer(6, 3, kmeans_init=True).train()
    before = vq.embedding.detach().clone()
    first = vq(z)  # codes and terms from the codebook before the step
    assert bool(vq.kmeans_done) and not vq.awaiting_kmeans
    torch.testing.assert_close(_rows(first.quantized.detach()), before[first.indices.flatten()])
    cluster_means = torch.stack([rows[labels == k].mean(0) for k in range(6)])
    codes = vq.embedding.detach()
    match = torch.cdist(cluster_means, codes).argmin(1)
    assert sorted(match.tolist()) == list(range(6))  # one code per component
    torch.testing.assert_close(codes[match], cluster_means, atol=1e-5, rtol=0)
    # from the next step on, a component's vectors share their own code
    indices = vq(z).indices.flatten()
    assert all(indices[labels == k].eq(match[k]).all() for k in range(6))


def test_kmeans_init_gathers_enough_vectors_first_and_then_resets_the_ema_averages():
    vq = VectorQuantizer(8, 2, ema=True, kmeans_init=True).train()
    initial = {name: b.clone() for name, b in vq.named_buffers()}
    batches = [torch.randn(3, 2) for _ in range(3)]  # one code per sample: 3 vectors a step
    for z in batches[:2]:
        vq(z)
        assert vq.awaiting_kmeans and not bool(vq.kmeans_done)
        for name in ("embedding", "ema_embed_sum", "ema_cluster_size"):  # no EMA step yet
            assert torch.equal(getattr(vq, name), initial[name])
    vq(batches[2])  # 9 vectors >= 8 codes
    assert bool(vq.kmeans_done)
    assert _is_kmeans_fixpoint(torch.cat(batches), vq.embedding)
    assert torch.equal(vq.ema_embed_sum, vq.embedding)
    assert torch.equal(vq.ema_cluster_size, torch.ones(8))
    assert int(vq.code_counts.sum()) == 9  # usage was counted all along


def test_kmeans_done_is_saved_so_a_loaded_quantizer_does_not_initialise_again():
    z = torch.randn(4, 2, 3, 3)
    trained = VectorQuantizer(5, 2, kmeans_init=True).train()
    untrained_state = {k: v.clone() for k, v in trained.state_dict().items()}
    trained(z)
    state = trained.state_dict()
    assert state["kmeans_done"].item() and not untrained_state["kmeans_done"].item()
    far = 100.0 + torch.randn(4, 2, 3, 3)
    loaded = VectorQuantizer(5, 2, kmeans_init=True).train()
    loaded.load_state_dict(state)
    loaded(far)  # no optimizer, no EMA: only an initialisation could change the codebook
    assert torch.equal(loaded.embedding, state["embedding"])
    not_yet = VectorQuantizer(5, 2, kmeans_init=True).train()
    not_yet.load_state_dict(untrained_state)  # saved before its initialisation
    not_yet(far)
    assert (not_yet.embedding > 90).all()


def test_residual_levels_initialise_one_after_another_on_their_own_residuals():
    rq = ResidualQuantizer(2, 4, 2, kmeans_init=True).train()
    first, second = torch.randn(6, 2, 2, 2), torch.randn(6, 2, 2, 2)
    rq(first)
    assert [level.awaiting_kmeans for level in rq.levels] == [False, True]
    assert _is_kmeans_fixpoint(_rows(first), rq.levels[0].embedding)
    rq(second)  # level 2 gathers the residuals of level 1's k-means codes
    assert not rq.levels[1].awaiting_kmeans
    codes = rq.levels[0].embedding.detach()
    rows = _rows(second)
    residuals = rows - codes[torch.cdist(rows, codes).argmin(1)]
    assert _is_kmeans_fixpoint(residuals, rq.levels[1].embedding)


def test_kmeans_init_with_cosine_gives_unit_codes_at_the_directions_of_the_clusters():
    directions = F.normalize(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]]))
    rows, labels = _mixture(directions, 30, spread=0.02)
    rows = rows * torch.rand(len(rows), 1).add(0.5)  # lengths do not matter
    vq = VectorQuantizer(4, 3, cosine=True, kmeans_init=True).train()
    vq(_grid(rows, 12, 10))
    torch.testing.assert_close(vq.embedding.norm(dim=1), torch.ones(4))
    match = torch.cdist(directions, vq.embedding.detach()).argmin(1)
    assert sorted(match.tolist()) == [0, 1, 2, 3]
    assert (torch.cdist(directions, vq.embedding.detach()).min(1).values < 0.02).all()


# --- the rotation trick ---------------------------------------------------------------------

def _rotation_matrix(e, q):
    """R = I - 2 r r^T + 2 q^ e^^T (Fifty et al. 2024, Sec. 4) as a matrix, for vectors e, q."""
    e_unit, q_unit = e / e.norm(), q / q.norm()
    r = (e_unit + q_unit) / (e_unit + q_unit).norm()
    return torch.eye(len(e), dtype=e.dtype) - 2 * torch.outer(r, r) + 2 * torch.outer(q_unit,
                                                                                      e_unit)


def test_rotate_onto_has_the_codes_value_and_the_papers_gradient():
    z = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    codes = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    out = rotate_onto(z, codes)
    torch.testing.assert_close(out, codes)
    g = torch.randn_like(z)
    (grad,) = torch.autograd.grad(out, z, g)
    for e, q, upstream, got in zip(_rows(z.detach()), _rows(codes), _rows(g), _rows(grad),
                                   strict=True):
        rotation = _rotation_matrix(e, q)
        torch.testing.assert_close(rotation.T @ rotation, torch.eye(4, dtype=torch.float64))
        torch.testing.assert_close(rotation @ (e / e.norm()), q / q.norm())
        torch.testing.assert_close(got, q.norm() / e.norm() * rotation.T @ upstream)
    assert not torch.allclose(grad, g)  # not the straight-through identity


def test_vq_with_the_rotation_trick_changes_only_the_gradient():
    plain = VectorQuantizer(10, 3)
    rotated = VectorQuantizer(10, 3, rotation_trick=True)
    torch.nn.init.normal_(plain.embedding)
    rotated.load_state_dict(plain.state_dict())
    z = torch.randn(4, 3, 3, 3, requires_grad=True)
    a, b = plain(z), rotated(z)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(b.quantized, a.quantized)
    for name in a.terms:
        torch.testing.assert_close(b.terms[name], a.terms[name])
    g = torch.randn_like(z)
    grad, codebook_grad = torch.autograd.grad(b.quantized, [z, rotated.embedding], g,
                                              allow_unused=True)
    torch.testing.assert_close(grad, torch.autograd.grad(rotate_onto(z, a.quantized), z, g)[0])
    assert codebook_grad is None  # the codebook learns from its term only
    # residual levels: one rotation from z_e onto the sum of the levels' codes
    rq = ResidualQuantizer(2, 6, 3, rotation_trick=True)
    q = rq(z)
    torch.testing.assert_close(torch.autograd.grad(q.quantized, z, g)[0],
                               torch.autograd.grad(rotate_onto(z, q.quantized), z, g)[0])


# --- cosine-similarity codebooks ------------------------------------------------------------

def test_cosine_codebook_equals_an_independent_computation():
    vq = VectorQuantizer(12, 3, cosine=True)
    torch.nn.init.normal_(vq.embedding)
    z = torch.randn(5, 3, 4, 2, requires_grad=True)
    q = vq(z)
    rows = _rows(z.detach())
    similarity = F.cosine_similarity(rows.unsqueeze(1), vq.embedding.detach(), dim=-1)
    index = similarity.argmax(1)
    assert torch.equal(q.indices.flatten(), index)
    unit_codes = vq.embedding.detach()[index] / vq.embedding.detach()[index].norm(dim=1,
                                                                                  keepdim=True)
    unit_rows = rows / rows.norm(dim=1, keepdim=True)
    squared = ((unit_rows - unit_codes) ** 2).sum(1).view(5, -1).sum(1)
    torch.testing.assert_close(q.terms["codebook"], squared)
    torch.testing.assert_close(q.terms["commitment"], squared)
    torch.testing.assert_close(_rows(q.quantized.detach()), unit_codes)
    torch.testing.assert_close(vq.codes_from_indices(q.indices), q.quantized.detach())
    scaled = vq(3.0 * z.detach())  # only directions count
    assert torch.equal(scaled.indices, q.indices)
    torch.testing.assert_close(scaled.terms["commitment"], q.terms["commitment"])
    # the gradient reaches z through the normalisation: nothing along z itself
    (grad,) = torch.autograd.grad(q.quantized, z, torch.randn_like(z))
    torch.testing.assert_close((grad * z.detach()).sum(1), torch.zeros(5, 4, 2))


def test_residual_levels_refuse_cosine_naming_the_option():
    with pytest.raises(ValueError, match="cosine"):
        ResidualQuantizer(2, 4, 3, cosine=True)
    with pytest.raises(ValueError, match="cosine"):
        create_model("hrqvae", input_dim=(1, 8, 8), cosine=True)


# --- lookup-free quantization ---------------------------------------------------------------

def test_lfq_codes_are_the_sign_pattern_and_the_index_its_binary_number():
    lfq = LookupFreeQuantizer(5)
    assert lfq.num_codes == 32
    z = torch.randn(4, 5, 3, 3, requires_grad=True)
    q = lfq(z)
    signs = torch.where(z.detach() > 0, 1.0, -1.0)
    assert torch.equal(q.quantized.detach(), signs)
    for row, index in zip(_rows(z.detach()), q.indices.flatten(), strict=True):
        bits = "".join("1" if v > 0 else "0" for v in reversed(row.tolist()))
        assert int(index) == int(bits, 2)  # channel 0 is the least significant bit
    assert torch.equal(lfq.codes_from_indices(q.indices), signs)
    torch.testing.assert_close(q.terms["commitment"], ((z.detach() - signs) ** 2).sum((1, 2, 3)))
    g = torch.randn_like(z)
    torch.testing.assert_close(torch.autograd.grad(q.quantized, z, g)[0], g)  # straight-through


def test_lfq_entropies_equal_those_of_the_soft_assignment_over_all_codes():
    tau = 0.7
    lfq = LookupFreeQuantizer(3, temperature=tau)
    z = 0.6 * torch.randn(4, 3, 2, 3, dtype=torch.float64)
    terms = lfq(z).terms
    corners = lfq.codes_from_indices(torch.arange(8)).to(z.dtype)  # (8, 3)
    rows = _rows(z)
    soft = torch.softmax(-torch.cdist(rows, corners) ** 2 / tau, dim=1)  # (positions, 8)
    per_position = Categorical(probs=soft).entropy()
    torch.testing.assert_close(terms["entropy"], per_position.view(4, 6).sum(1))
    mean_soft = soft.mean(0)
    marginals = ((corners > 0).to(z.dtype) * mean_soft.unsqueeze(1)).sum(0)  # p(bit_i = 1)
    binary = -(marginals * marginals.log() + (1 - marginals) * (1 - marginals).log())
    torch.testing.assert_close(terms["batch_entropy"], torch.full((4,), 6 * binary.sum().item(),
                                                                  dtype=z.dtype))
    # the entropy of the marginals bounds that of the mean assignment over the 8 codes
    assert binary.sum() >= Categorical(probs=mean_soft).entropy()


def test_lfq_batch_entropy_is_the_only_term_that_depends_on_the_batch():
    lfq = LookupFreeQuantizer(4).eval()
    z = torch.randn(64, 4, 3, 3)
    small, large = lfq(z[:8]), lfq(z)
    assert torch.equal(small.indices, large.indices[:8])
    for name in ("commitment", "entropy"):
        torch.testing.assert_close(small.terms[name], large.terms[name][:8])
    assert not torch.allclose(small.terms["batch_entropy"], large.terms["batch_entropy"][:8])
    # each sample carries the batch value: the batch mean is the estimate itself
    assert large.terms["batch_entropy"].unique().numel() == 1


def test_lfq_model_weighs_the_batch_entropy_negatively():
    model = create_model("lfq_vae", input_dim=(1, 8, 8), latent_dim=4, commitment_weight=0.5,
                         entropy_weight=0.2, batch_entropy_weight=0.3).eval()
    assert model.quantizer.num_codes == 16
    out = model(torch.rand(6, 1, 8, 8))
    t = out.terms
    torch.testing.assert_close(out.loss, (t["recon"] + 0.5 * t["commitment"] + 0.2 * t["entropy"]
                                          - 0.3 * t["batch_entropy"]).mean())
    with pytest.raises(ValueError, match="latent_dim"):
        create_model("lfq_vae", input_dim=(1, 8, 8), latent_dim=21)


# --- Gumbel-softmax codes -------------------------------------------------------------------

def test_gumbel_kl_equals_torch_distributions_summed_per_sample():
    quantizer = GumbelQuantizer(7, 3).eval()
    logits = 2.0 * torch.randn(5, 7, 3, 2)
    kl = kl_divergence(Categorical(logits=logits.movedim(1, -1)),
                       Categorical(probs=torch.full((7,), 1 / 7)))  # (5, 3, 2)
    torch.testing.assert_close(quantizer(logits).terms["kl"], kl.sum((1, 2)))
    uniform = quantizer(torch.zeros(2, 7, 4)).terms["kl"]
    torch.testing.assert_close(uniform, torch.zeros(2))


def test_gumbel_eval_takes_the_argmax_code_and_training_a_relaxed_draw_of_the_softmax():
    quantizer = GumbelQuantizer(4, 4)
    with torch.no_grad():
        quantizer.embedding.copy_(torch.eye(4))  # the decoder input is then y itself
    logits = torch.randn(3, 4, 5, 5)
    q = quantizer.eval()(logits)
    assert torch.equal(q.indices, logits.argmax(1))
    torch.testing.assert_close(q.quantized, F.one_hot(logits.argmax(1), 4).movedim(-1, 1).float())
    quantizer.train()
    probabilities = torch.tensor([0.1, 0.2, 0.3, 0.4])
    many = probabilities.log().view(1, 4, 1).expand(1, 4, 20000)
    draw = quantizer(many, temperature=0.5)
    y = draw.quantized.detach()
    assert (y >= 0).all()
    torch.testing.assert_close(y.sum(1), torch.ones(1, 20000))
    assert torch.equal(y.argmax(1), draw.indices)
    frequencies = torch.bincount(draw.indices.flatten(), minlength=4) / 20000
    torch.testing.assert_close(frequencies, probabilities, atol=0.015, rtol=0)  # Gumbel-max
    sharper = quantizer(many, temperature=0.05).quantized.detach()
    assert sharper.max(1).values.mean() > y.max(1).values.mean() + 0.15
    assert quantizer.usage_metrics()["usage"] == 1.0


def test_gumbel_temperature_follows_its_geometric_schedule():
    model = create_model("gumbel_vqvae", input_dim=(1, 8, 8), latent_dim=3, num_codes=8,
                         tau_start=2.0, tau_end=0.5, tau_anneal_steps=10)
    for step, tau in [(0, 2.0), (5, 1.0), (10, 0.5), (40, 0.5)]:
        model.num_steps.fill_(step)
        assert model.temperature() == pytest.approx(tau)
    model.num_steps.fill_(0)
    seen = []
    forward = model.quantizer.forward
    model.quantizer.forward = lambda logits, t: seen.append(t) or forward(logits, t)
    x, _ = load_dataset("digits", "train")
    Trainer(model, TrainerConfig(epochs=1, batch_size=32, progress=False,
                                 device="cpu")).fit(x[:160])
    assert seen[:5] == pytest.approx([2.0 * 0.25 ** (s / 10) for s in range(5)])
    assert int(model.num_steps) == 5 and model.temperature() == pytest.approx(1.0)


def test_gumbel_model_reads_logits_and_decodes_the_argmax_codes():
    model = create_model("gumbel_vqvae", input_dim=(1, 8, 8), latent_dim=3, num_codes=8).eval()
    x = torch.rand(4, 1, 8, 8)
    logits = model.encoder(x)
    assert logits.shape == (4, 8, 2, 2) and model.latent_shape == (3, 2, 2)
    codes = model.code_indices(x)
    assert torch.equal(codes[:, 0], logits.argmax(1))
    torch.testing.assert_close(model.decode_indices(codes), model(x).decoder_params)
    flat = create_model("gumbel_vqvae", input_dim=(6,), latent_dim=2, num_codes=5)
    assert flat.encoder(torch.rand(3, 6)).shape == (3, 5)
    assert flat.code_indices(torch.rand(3, 6)).shape == (3, 1, 1, 1)


# --- every option and model: batch invariance, loss falls, save and load --------------------

VARIANTS = [
    ("vqvae", {"num_codes": 16, "kmeans_init": True}),
    ("vqvae", {"num_codes": 16, "rotation_trick": True}),
    ("vqvae", {"num_codes": 16, "cosine": True}),
    ("vqvae_ema", {"num_codes": 16, "cosine": True, "kmeans_init": True,
                   "restart_dead_codes": True}),
    ("hrqvae", {"num_codes": 8, "depth": 2, "kmeans_init": True, "rotation_trick": True}),
    ("lfq_vae", {}),
    ("gumbel_vqvae", {"num_codes": 16, "tau_anneal_steps": 40}),
]


@pytest.mark.parametrize(("name", "options"), VARIANTS)
def test_variant_trains_is_batch_invariant_and_round_trips(name, options, tmp_path):
    x, _ = load_dataset("digits", "train")
    x = x[:192]
    model = create_model(name, input_dim=(1, 8, 8), latent_dim=4, encoder="spatial",
                         **options)
    with torch.no_grad():
        untrained = model.eval()(x).loss.item()
    untrained_mse = reconstruction_mse(model, x)
    Trainer(model, TrainerConfig(epochs=4, batch_size=32, learning_rate=1e-2, progress=False,
                                 device="cpu")).fit(x)
    model.eval()
    with torch.no_grad():
        out, small = model(x), model(x[:16])
    assert out.loss.item() < untrained
    assert reconstruction_mse(model, x) < 0.6 * untrained_mse
    for term, value in small.terms.items():
        if term != "batch_entropy":
            torch.testing.assert_close(value, out.terms[term][:16])
    if options.get("kmeans_init"):
        assert all(bool(done) for key, done in model.state_dict().items()
                   if key.endswith("kmeans_done"))
    loaded = load_model(model.save(tmp_path / "model"))
    assert type(loaded) is get_model_class(name)
    state, restored = model.state_dict(), loaded.state_dict()
    assert state.keys() == restored.keys()
    assert all(torch.equal(state[k], restored[k]) for k in state)
    with torch.no_grad():
        for term, value in loaded(x).terms.items():
            torch.testing.assert_close(value, out.terms[term])
    assert not any(level.awaiting_kmeans for level in loaded.modules()
                   if isinstance(level, VectorQuantizer))


def test_variant_options_are_in_the_configs_and_off_by_default():
    config = get_model_class("vqvae").config_class(input_dim=(1, 8, 8))
    assert (config.kmeans_init, config.rotation_trick, config.cosine) == (False, False, False)
    assert config.kmeans_iters == 10
    quantizer = create_model("vqvae", input_dim=(1, 8, 8)).quantizer
    assert not quantizer.kmeans_init and not quantizer.rotation_trick and not quantizer.cosine
    assert "kmeans_done" not in quantizer.state_dict()
    with pytest.raises(ValueError, match="kmeans_iters"):
        create_model("vqvae", input_dim=(1, 8, 8), kmeans_iters=0)
    with pytest.raises(ValueError, match="tau_start"):
        create_model("gumbel_vqvae", input_dim=(1, 8, 8), tau_start=0)
    assert math.isclose(get_model_class("gumbel_vqvae").config_class(
        input_dim=(1, 8, 8)).tau_end, 1 / 16)
