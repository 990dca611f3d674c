import json

import pytest
import torch

from vaebench import AE, VAE, Trainer, TrainerConfig, create_model, load_model
from vaebench.data import load_dataset
from vaebench.training import evaluate


@pytest.fixture(scope="module")
def digits():
    x_train, _ = load_dataset("digits", "train")
    x_test, _ = load_dataset("digits", "test")
    return x_train, x_test


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return create_model("vae", input_dim=(1, 8, 8), latent_dim=4, likelihood="bernoulli",
                        encoder_kwargs={"hidden": [64]}, decoder_kwargs={"hidden": [64]}, **kw)


def _config(**kw):
    return TrainerConfig(**{"epochs": 3, "batch_size": 64, "progress": False, **kw})


def test_eval_loss_goes_down_and_history(digits, tmp_path):
    x_train, x_test = digits
    model = _model()
    before = evaluate(model, x_test)["loss"]
    history = Trainer(model, _config(epochs=5, output_dir=str(tmp_path))).fit(x_train, x_test)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert {"train_loss", "train_recon", "train_kl", "eval_loss", "eval_recon", "eval_kl",
            "lr", "seconds"} <= set(history[0])
    assert history[-1]["eval_loss"] < history[0]["eval_loss"] < before
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved == json.loads(json.dumps(history))
    for record in history:  # each loss is the sum of its terms
        assert record["eval_loss"] == pytest.approx(record["eval_recon"] + record["eval_kl"],
                                                    rel=1e-5)


def test_same_seed_same_weights(digits):
    x_train, _ = digits
    weights = []
    for _ in range(2):
        model = _model(seed=1)
        Trainer(model, _config(seed=5)).fit(x_train)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    other = _model(seed=1)
    Trainer(other, _config(seed=6)).fit(x_train)
    assert not torch.equal(other.state_dict()["decoder.net.0.weight"],
                           weights[0]["decoder.net.0.weight"])


def test_best_model_is_kept(digits, tmp_path):
    x_train, x_test = digits
    model = _model()
    trainer = Trainer(model, _config(epochs=4, learning_rate=3e-3, output_dir=str(tmp_path)))
    history = trainer.fit(x_train, x_test)
    best = min(history, key=lambda r: r["eval_loss"])
    assert trainer.best_epoch == best["epoch"]
    torch.manual_seed(0)
    restored = evaluate(model, x_test)["loss"]
    loaded = load_model(tmp_path / "model")
    torch.manual_seed(0)
    from_disk = evaluate(loaded, x_test)["loss"]
    assert restored == pytest.approx(from_disk)
    # eval uses one posterior draw: the restored model is the best within noise
    assert restored == pytest.approx(best["eval_loss"], rel=0.02)


def test_checkpoints_and_resume_reproduce_an_uninterrupted_run(digits, tmp_path):
    x_train, x_test = digits
    full = _model()
    Trainer(full, _config(epochs=4, keep_best=False)).fit(x_train, x_test)

    first = _model()
    Trainer(first, _config(epochs=4, keep_best=False, checkpoint_every=2,
                           output_dir=str(tmp_path))).fit(x_train, x_test)
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert folders == ["epoch_0002", "epoch_0004"]

    resumed = _model(seed=9)  # different init: everything must come from the checkpoint
    history = Trainer(resumed, _config(epochs=4, keep_best=False)).fit(
        x_train, x_test, resume_from=tmp_path / "checkpoints" / "epoch_0002")
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


@pytest.mark.parametrize("optimizer,scheduler", [("sgd", "step"), ("adamw", "cosine"),
                                                 ("rmsprop", "plateau"), ("adam", "onecycle"),
                                                 ("adagrad", "exponential")])
def test_optimizers_and_schedulers_by_name(digits, optimizer, scheduler):
    x_train, x_test = digits
    model = _model()
    lr = 0.05 if optimizer == "sgd" else 1e-3  # plain SGD needs a larger step
    history = Trainer(model, _config(epochs=2, optimizer=optimizer, scheduler=scheduler,
                                     learning_rate=lr,
                                     scheduler_kwargs={"step_size": 1} if scheduler == "step"
                                     else {})).fit(x_train[:256], x_test[:64])
    assert history[-1]["eval_loss"] < history[0]["train_loss"]
    if scheduler in ("step", "cosine", "exponential"):
        assert history[-1]["lr"] < lr


def test_gradient_clipping_bounds_the_update(digits):
    x_train, _ = digits
    model = _model()
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    Trainer(model, _config(epochs=1, optimizer="sgd", learning_rate=1.0, grad_clip_norm=1e-3,
                           batch_size=len(x_train))).fit(x_train)
    now = dict(model.named_parameters())
    change = torch.sqrt(sum(((now[k] - v) ** 2).sum() for k, v in start.items()))
    assert change <= 1e-3 * 1.0001


def test_bad_data_fails_before_training(digits, tmp_path):
    x_train, _ = digits
    model = _model()
    trainer = Trainer(model, _config(output_dir=str(tmp_path)))
    bad = x_train.clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="train data contains NaN"):
        trainer.fit(bad)
    with pytest.raises(ValueError, match=r"input_dim is \(1, 8, 8\)"):
        trainer.fit(torch.rand(10, 1, 28, 28))
    with pytest.raises(ValueError, match="eval data contains infinite"):
        trainer.fit(x_train, torch.full((4, 1, 8, 8), float("inf")))
    assert not (tmp_path / "history.json").exists()


def test_diverging_training_raises(digits):
    x_train, _ = digits
    model = _model()
    with pytest.raises(FloatingPointError, match="diverged in epoch 1"):
        Trainer(model, _config(epochs=2, optimizer="sgd", learning_rate=1e12)).fit(x_train)


def test_even_batches_train_on_every_row_in_near_equal_steps(digits):
    """1,438 rows at batch 700: steps of 479, 479 and 480, not 700, 700 and 38."""
    x_train, _ = digits
    model, sizes = _model(), []
    step = model.training_step
    model.training_step = lambda x, update, **inputs: (sizes.append(len(x)),
                                                       step(x, update, **inputs))[1]
    Trainer(model, _config(epochs=2, batch_size=700, even_batches=True)).fit(x_train)
    assert len(x_train) == 1438 and sizes == [479, 479, 480] * 2 and model.num_steps == 6
    with pytest.raises(ValueError, match="drop_last and even_batches"):
        TrainerConfig(drop_last=True, even_batches=True)


def test_invalid_trainer_fields():
    with pytest.raises(ValueError, match="optimizer"):
        TrainerConfig(optimizer="adamax2")
    with pytest.raises(ValueError, match="batch_size"):
        TrainerConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr_max"):
        TrainerConfig(lr_max=1)
    with pytest.raises(ValueError, match="device"):
        TrainerConfig(device="tpu")
    model = _model()
    with pytest.raises(ValueError, match="optimizer_kwargs"):
        Trainer(model, _config(optimizer_kwargs={"nope": 1})).fit(torch.rand(8, 1, 8, 8))


class _TwoGroupVAE(VAE):
    """A VAE with a second parameter group trained by its own optimizer in the same step."""

    name = "two_group_test"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.critic = torch.nn.Linear(self.config.latent_dim, 1)
        self.epochs_started = 0

    def parameter_groups(self):
        critic = set(self.critic.parameters())
        return {"model": [p for p in self.parameters() if p not in critic],
                "critic": list(self.critic.parameters())}

    def optimizer_defaults(self):
        return {"critic": {"optimizer": "sgd", "learning_rate": 0.5}}

    def training_step(self, x, update, **inputs):
        output = super().training_step(x, update, **inputs)
        # the critic learns to predict 1 from the (detached) codes
        update("critic", ((self.critic(output.z.detach()) - 1) ** 2).mean())
        return output

    def on_epoch_start(self):
        self.epochs_started += 1

    def epoch_metrics(self):
        return {"critic_bias": float(self.critic.bias.detach())}


def test_models_declare_parameter_groups_and_update_steps(digits):
    x_train, _ = digits
    torch.manual_seed(0)
    model = _TwoGroupVAE(input_dim=(1, 8, 8), latent_dim=3, likelihood="bernoulli")
    trainer = Trainer(model, _config(epochs=2, batch_size=128))
    history = trainer.fit(x_train)
    assert model.epochs_started == 2
    assert int(model.num_steps) == 2 * -(-len(x_train) // 128)
    assert "train_critic_bias" in history[-1]
    z = model.encode(x_train[:200]).mean
    assert abs(float(model.critic(z).mean().detach()) - 1) < 0.1  # the critic's optimizer ran
    # per-group overrides from the trainer config win over the model's defaults
    optimizers = Trainer(model, _config(group_optimizers={"critic": {"learning_rate": 0.01}}))\
        ._build_optimizers()
    assert isinstance(optimizers["critic"], torch.optim.SGD)
    assert optimizers["critic"].param_groups[0]["lr"] == 0.01
    assert isinstance(optimizers["model"], torch.optim.Adam)
    with pytest.raises(ValueError, match="group_optimizers names"):
        Trainer(model, _config(group_optimizers={"disc": {}}))._build_optimizers()


class _LabelledAE(AE):
    """Needs labels: its reconstruction target is shifted by the label."""

    name = "labelled_test"
    needs_labels = True

    def objective(self, x, labels):
        self.seen_labels = labels
        return super().objective(x)


def test_labels_reach_models_that_need_them(digits):
    x_train, _ = digits
    _, y_train = load_dataset("digits", "train")
    model = _LabelledAE(input_dim=(1, 8, 8), latent_dim=2)
    Trainer(model, _config(epochs=1, batch_size=2000)).fit((x_train, y_train))
    assert sorted(model.seen_labels.tolist()) == sorted(y_train.tolist())
    with pytest.raises(ValueError, match="has no labels"):
        Trainer(model, _config(epochs=1)).fit(x_train)
