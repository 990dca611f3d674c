import math

import pytest
import torch

from vaebench import Trainer, TrainerConfig, create_model, load_model
from vaebench.data import load_dataset
from vaebench.models.vae import VAEConfig
from vaebench.schedules import cyclical, linear, schedule_value

KL_MODELS = ["vae", "beta_vae", "disentangled_beta_vae", "beta_tc_vae", "factor_vae", "vamp",
             "cvae"]
# the terms each model's KL schedule multiplies
ANNEALED = {"vae": ["kl"], "beta_vae": ["kl"], "disentangled_beta_vae": ["kl_capacity"],
            "beta_tc_vae": ["mi", "tc", "dim_kl"], "factor_vae": ["kl"], "vamp": ["kl"],
            "cvae": ["kl"]}


def test_linear_warmup_values():
    assert [linear(s, 10) for s in (0, 1, 3, 10, 15)] == pytest.approx([0, 0.1, 0.3, 1, 1])
    assert linear(0, 0) == 1.0
    assert linear(5, 10, start=2.0, end=4.0) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        linear(-1, 10)


def test_cyclical_values():
    values = [cyclical(s, 10, ratio=0.5) for s in range(22)]
    first = [0, 0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1, 1]
    assert values == pytest.approx(first + first + [0, 0.2])
    assert [cyclical(s, 10, 0.5, cycles=2) for s in (12, 19, 20, 23, 1000)] == pytest.approx(
        [0.4, 1, 1, 1, 1])
    assert cyclical(7, 10, ratio=1.0) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="ratio"):
        cyclical(3, 10, ratio=0)


def test_cyclical_matches_fu_et_al_formula():
    # Fu et al. 2019, Eq. 6: T iterations, M cycles, t = 1..T,
    # tau = mod(t - 1, ceil(T / M)) / (T / M); beta = tau / R if tau <= R else 1.
    total, cycles, ratio = 120, 4, 0.6
    for t in range(1, total + 1):
        tau = ((t - 1) % math.ceil(total / cycles)) / (total / cycles)
        expected = tau / ratio if tau <= ratio else 1.0
        assert cyclical(t - 1, total // cycles, ratio) == pytest.approx(expected)


@pytest.mark.parametrize("name", KL_MODELS)
def test_every_kl_model_inherits_the_schedule(name):
    model = create_model(name, input_dim=(1, 8, 8), latent_dim=3, kl_schedule="linear",
                         kl_anneal_steps=10, likelihood="bernoulli")
    model.eval()
    full = model.term_weights()
    model.train()
    for step, factor in ((0, 0.0), (4, 0.4), (10, 1.0), (30, 1.0)):
        model.num_steps.fill_(step)
        weights = model.term_weights()
        for term in ANNEALED[name]:
            assert weights[term] == pytest.approx(factor * full[term])
    if name == "factor_vae":  # the discriminator's TC penalty is not a KL term
        assert weights["tc"] == model.config.gamma


def test_annealed_loss_and_eval_weight():
    model = create_model("vae", input_dim=(1, 8, 8), latent_dim=3, kl_schedule="cyclical",
                         kl_anneal_steps=8, kl_cycle_ratio=0.5)
    model.num_steps.fill_(10)  # second cycle, tau = 2/8, weight 0.5
    x = torch.rand(6, 1, 8, 8)
    out = model(x)
    torch.testing.assert_close(out.loss, (out.terms["recon"] + 0.5 * out.terms["kl"]).mean())
    model.eval()  # evaluation reports the negative ELBO, the objective being annealed towards
    assert model.term_weights() == {"kl": 1.0}
    assert schedule_value("cyclical", 10, 8, 0.5) == 0.5


def test_saved_model_continues_the_schedule(tmp_path):
    model = create_model("beta_vae", input_dim=(1, 8, 8), latent_dim=3, beta=2.0,
                         kl_schedule="linear", kl_anneal_steps=20)
    model.num_steps.fill_(7)
    model.save(tmp_path)
    loaded = load_model(tmp_path).train()  # loaded for inference; training weights differ
    assert int(loaded.num_steps) == 7 and loaded.config.kl_schedule == "linear"
    assert loaded.term_weights()["kl"] == pytest.approx(2.0 * 7 / 20)


def test_resumed_training_continues_the_schedule(tmp_path):
    x_train, _ = load_dataset("digits", "train")
    x_train = x_train[:512]

    def model(seed):
        torch.manual_seed(seed)
        return create_model("vae", input_dim=(1, 8, 8), latent_dim=3, likelihood="bernoulli",
                            kl_schedule="cyclical", kl_anneal_steps=6, kl_cycle_ratio=0.5,
                            encoder_kwargs={"hidden": [32]}, decoder_kwargs={"hidden": [32]})

    def config(**kw):
        return TrainerConfig(epochs=3, batch_size=64, progress=False, keep_best=False, **kw)

    full = model(0)
    full_history = Trainer(full, config()).fit(x_train)
    first = model(0)
    Trainer(first, config(checkpoint_every=1, output_dir=str(tmp_path))).fit(x_train)
    resumed = model(5)
    history = Trainer(resumed, config()).fit(
        x_train, resume_from=tmp_path / "checkpoints" / "epoch_0001")
    assert int(resumed.num_steps) == int(full.num_steps) == 3 * 8
    # a schedule restarted at step 0 would give other losses and weights
    assert history[-1]["train_loss"] == pytest.approx(full_history[-1]["train_loss"])
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


@pytest.mark.parametrize("fields,name", [
    ({"kl_schedule": "cosine"}, "kl_schedule"),
    ({"kl_schedule": "linear"}, "kl_anneal_steps"),
    ({"kl_schedule": "cyclical", "kl_anneal_steps": -1}, "kl_anneal_steps"),
    ({"kl_cycle_ratio": 0.0}, "kl_cycle_ratio"),
    ({"kl_cycle_ratio": 1.5}, "kl_cycle_ratio"),
    ({"kl_cycles": 0}, "kl_cycles"),
])
def test_invalid_schedule_fields_name_the_field(fields, name):
    with pytest.raises(ValueError, match=name):
        VAEConfig(input_dim=(1, 8, 8), **fields)
    with pytest.raises(ValueError, match=name):
        create_model("beta_tc_vae", input_dim=(1, 8, 8), **fields)
