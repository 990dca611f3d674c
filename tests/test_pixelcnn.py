import itertools

import pytest
import torch

from vaebench.samplers import GatedPixelCNN


def _perturbed(indices, i, j, levels, num_codes):
    changed = indices.clone()
    changed[:, levels, i, j] = (changed[:, levels, i, j] + 1) % num_codes
    return changed


@pytest.mark.parametrize("depth", [1, 2])
def test_masks_are_causal_in_raster_order(depth):
    torch.manual_seed(0)
    net = GatedPixelCNN(5, (4, 5), depth=depth, channels=8, layers=3, kernel_size=3).double()
    indices = torch.randint(0, 5, (2, depth, 4, 5))
    base = net.logits(indices)  # (B, depth, h, w, K)
    order = [(i, j) for i in range(4) for j in range(5)]
    for p, (i, j) in enumerate(order):
        logits = net.logits(_perturbed(indices, i, j, slice(None), 5))
        for q, (a, b) in enumerate(order):
            if q < p:  # earlier positions never see a later code
                assert torch.equal(logits[:, :, a, b], base[:, :, a, b]), (p, q)
        # the position's own first level does not see its own codes
        assert torch.equal(logits[:, 0, i, j], base[:, 0, i, j])
    if depth == 2:
        # level 1 at p reads level 0 at p, but not its own code
        i, j = 1, 2
        changed = net.logits(_perturbed(indices, i, j, 1, 5))
        assert torch.equal(changed[:, :, i, j], base[:, :, i, j])
        changed = net.logits(_perturbed(indices, i, j, 0, 5))
        assert not torch.equal(changed[:, 1, i, j], base[:, 1, i, j])


def test_no_blind_spot():
    """The last position depends on every earlier one (including up-right of it)."""
    torch.manual_seed(0)
    net = GatedPixelCNN(4, (5, 5), channels=8, layers=4, kernel_size=3).double()
    indices = torch.randint(0, 4, (1, 1, 5, 5))
    base = net.logits(indices)[:, :, 4, 4]
    for i, j in itertools.product(range(5), range(5)):
        if (i, j) == (4, 4):
            continue
        changed = net.logits(_perturbed(indices, i, j, slice(None), 4))[:, :, 4, 4]
        assert not torch.allclose(changed, base), (i, j)


@pytest.mark.parametrize(("grid", "depth", "num_codes"), [((2, 2), 1, 3), ((1, 2), 2, 2)])
def test_log_prob_is_normalized_over_all_grids(grid, depth, num_codes):
    """Summing exp(log p) over every possible grid gives 1: the factorization is a proper
    autoregressive one (a leak of a code into its own conditional would break this)."""
    torch.manual_seed(0)
    net = GatedPixelCNN(num_codes, grid, depth=depth, channels=8, layers=2,
                        kernel_size=3).double()
    size = depth * grid[0] * grid[1]
    every = torch.tensor(list(itertools.product(range(num_codes), repeat=size)))
    total = net.log_prob(every.view(-1, depth, *grid)).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.double))


def test_samples_follow_log_prob():
    torch.manual_seed(0)
    net = GatedPixelCNN(2, (1, 2), depth=1, channels=8, layers=2, kernel_size=3)
    with torch.no_grad():  # make the model far from uniform
        for head in net.heads:
            head.bias.copy_(torch.tensor([1.5, -1.5]))
    every = torch.tensor(list(itertools.product(range(2), repeat=2))).view(4, 1, 1, 2)
    probs = net.log_prob(every).exp().detach()
    draws = net.sample(4000, generator=torch.Generator().manual_seed(1))
    assert draws.shape == (4000, 1, 1, 2)
    frequencies = torch.stack([(draws == g).flatten(1).all(1).float().mean() for g in every])
    assert (frequencies - probs).abs().max() < 0.03


def test_fit_learns_a_pattern_and_samples_it():
    torch.manual_seed(0)
    # checkerboards of two colours, shifted at random: entropy 1 bit per grid
    base = (torch.arange(4).view(4, 1) + torch.arange(4)) % 2
    shift = torch.randint(0, 2, (256, 1, 1, 1))
    data = ((base + shift) % 2 * 3).long()  # codes 0 and 3 of 4
    net = GatedPixelCNN(4, (4, 4), channels=16, layers=3, kernel_size=3)
    history = net.fit(data, epochs=15, batch_size=32, lr=3e-3,
                      generator=torch.Generator().manual_seed(0))
    assert history[-1] < history[0] and history[-1] < 1.5  # nats; ln 2 = 0.69 is optimal
    samples = net.sample(16, generator=torch.Generator().manual_seed(0))
    patterns = [base * 3, (1 - base) * 3]
    matches = [any(torch.equal(s[0], p) for p in patterns) for s in samples]
    assert sum(matches) >= 12


def test_bad_inputs():
    net = GatedPixelCNN(4, (3, 3))
    with pytest.raises(ValueError, match=r"\(B, 1, 3, 3\)"):
        net.log_prob(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="kernel_size"):
        GatedPixelCNN(4, (3, 3), kernel_size=4)
    with pytest.raises(ValueError, match="grid_shape"):
        GatedPixelCNN(4, (3,))
