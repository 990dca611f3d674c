"""Import of models saved by pythae: folders written here in pythae's format (pythae itself
is not installed), checked against the same weights applied by hand."""

import json
import math
import pickle
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from vaebench import from_pythae, load_model
from vaebench.cli import main
from vaebench.nn import MLPDecoder

INPUT_DIM = (1, 6, 6)
FEATURES = 36
LATENT = 4
HIDDEN = 512  # pythae's default MLPs
WAE_SCALES = [0.1, 0.2, 0.5, 1.0, 2.0, 5, 10.0]

# The model-specific fields pythae's model_config.json holds (its defaults, unless a test
# changes them), and the heads of the model's default encoder.
GAUSSIAN, POINT, VMF = ("embedding", "log_var"), ("embedding",), ("embedding",
                                                                   "log_concentration")
PYTHAE_MODELS = {
    "AE": ("AEConfig", {}, POINT),
    "VAE": ("VAEConfig", {"reconstruction_loss": "mse"}, GAUSSIAN),
    "BetaVAE": ("BetaVAEConfig", {"reconstruction_loss": "mse", "beta": 1.0}, GAUSSIAN),
    "DisentangledBetaVAE": ("DisentangledBetaVAEConfig", {
        "reconstruction_loss": "mse", "beta": 10.0, "C": 50.0, "warmup_epoch": 25}, GAUSSIAN),
    "BetaTCVAE": ("BetaTCVAEConfig", {"reconstruction_loss": "mse", "alpha": 1.0, "beta": 1.0,
                                      "gamma": 1.0, "use_mss": True}, GAUSSIAN),
    "IWAE": ("IWAEConfig", {"reconstruction_loss": "mse", "number_samples": 10}, GAUSSIAN),
    "MIWAE": ("MIWAEConfig", {"reconstruction_loss": "mse", "number_gradient_estimates": 5,
                              "number_samples": 10}, GAUSSIAN),
    "PIWAE": ("PIWAEConfig", {"reconstruction_loss": "mse", "number_gradient_estimates": 5,
                              "number_samples": 10}, GAUSSIAN),
    "CIWAE": ("CIWAEConfig", {"reconstruction_loss": "mse", "number_samples": 10,
                              "beta": 0.5}, GAUSSIAN),
    "SVAE": ("SVAEConfig", {"reconstruction_loss": "mse"}, VMF),
    "VAMP": ("VAMPConfig", {"reconstruction_loss": "mse", "number_components": 50,
                            "linear_scheduling_steps": 0}, GAUSSIAN),
    "WAE_MMD": ("WAE_MMD_Config", {"kernel_choice": "imq", "reg_weight": 0.03,
                                   "kernel_bandwidth": 1.0, "scales": WAE_SCALES,
                                   "reconstruction_loss_scale": 1.0}, POINT),
    "INFOVAE_MMD": ("INFOVAE_MMD_Config", {"reconstruction_loss": "mse", "kernel_choice": "imq",
                                           "alpha": 0, "lbd": 2.0, "kernel_bandwidth": 1.0,
                                           "scales": WAE_SCALES}, GAUSSIAN),
    "RAE_L2": ("RAE_L2_Config", {"embedding_weight": 0.0001, "reg_weight": 1e-07}, POINT),
}


class RunsCode:
    """Unpickling this creates ``marker``: what a malicious pickle could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def pythae_state(heads, components=0, seed=0):
    """A state dict with the names and shapes of pythae's default networks."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"encoder.layers.0.0.weight": (HIDDEN, FEATURES), "encoder.layers.0.0.bias": (HIDDEN,),
              "decoder.layers.0.0.weight": (HIDDEN, LATENT), "decoder.layers.0.0.bias": (HIDDEN,),
              "decoder.layers.1.0.weight": (FEATURES, HIDDEN),
              "decoder.layers.1.0.bias": (FEATURES,)}
    for head in heads:
        rows = 1 if head == "log_concentration" else LATENT
        shapes[f"encoder.{head}.weight"] = (rows, HIDDEN)
        shapes[f"encoder.{head}.bias"] = (rows,)
    if components:
        shapes["pseudo_inputs.0.weight"] = (FEATURES, components)
        shapes["pseudo_inputs.0.bias"] = (FEATURES,)
    return OrderedDict((name, 0.2 * torch.randn(shape, generator=generator))
                       for name, shape in shapes.items())


def write_pythae_folder(folder, model="VAE", changes=None, state=None):
    """What pythae's model.save() writes for ``model`` with its default networks."""
    config_name, fields, heads = PYTHAE_MODELS[model]
    config = {"name": config_name, "input_dim": list(INPUT_DIM), "latent_dim": LATENT,
              "uses_default_encoder": True, "uses_default_decoder": True,
              **fields, **(changes or {})}
    if state is None:
        state = pythae_state(heads, config.get("number_components", 0))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_config.json").write_text(json.dumps(config))
    (folder / "environment.json").write_text(json.dumps({"name": "EnvironmentConfig",
                                                         "python_version": "3.11"}))
    torch.save({"model_state_dict": state}, folder / "model.pt")
    return state


def linear(state, layer, inputs):
    return F.linear(inputs, state[f"{layer}.weight"], state[f"{layer}.bias"])


def encoder_heads(state, x, heads):
    """pythae's default encoder applied by hand: one tensor per head."""
    hidden = F.relu(linear(state, "encoder.layers.0.0", x.flatten(1)))
    return [linear(state, f"encoder.{head}", hidden) for head in heads]


def decoder_probabilities(state, z):
    """pythae's default decoder applied by hand (it ends with a sigmoid)."""
    hidden = F.relu(linear(state, "decoder.layers.0.0", z))
    return torch.sigmoid(linear(state, "decoder.layers.1.0", hidden)).view(-1, *INPUT_DIM)


@pytest.fixture
def batch():
    return torch.rand(5, *INPUT_DIM), torch.randn(5, LATENT)


def test_vae_mse_equals_the_weights_applied_by_hand(tmp_path, batch):
    x, z = batch
    state = write_pythae_folder(tmp_path)
    model = from_pythae(tmp_path)
    assert model.name == "vae" and not model.training
    assert (model.config.likelihood, model.config.sigma) == ("gaussian", 1.0)
    mean, log_var = encoder_heads(state, x, GAUSSIAN)
    q = model.encode(x)
    torch.testing.assert_close(q.mean, mean)
    torch.testing.assert_close(q.log_var, log_var)
    decoded = decoder_probabilities(state, z)
    torch.testing.assert_close(model.likelihood.mean(model.decode(z)), decoded)
    # the loss at a fixed z: pythae's 0.5 * SSE + KL, plus the constant pythae leaves out
    their_recon = 0.5 * ((x - decoded) ** 2).flatten(1).sum(1)
    their_kl = -0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(1)
    constant = 0.5 * FEATURES * math.log(2 * math.pi)
    torch.testing.assert_close(model.likelihood.nll(model.decode(z), x), their_recon + constant)
    torch.testing.assert_close(q.kl_standard_normal(), their_kl)


def test_bce_is_the_bernoulli_likelihood_on_the_same_probabilities(tmp_path, batch):
    x, z = batch
    state = write_pythae_folder(tmp_path, "BetaVAE", {"reconstruction_loss": "bce",
                                                      "beta": 3.0})
    model = from_pythae(tmp_path)
    assert (model.name, model.config.likelihood, model.config.beta) == ("beta_vae",
                                                                        "bernoulli", 3.0)
    probabilities = decoder_probabilities(state, z)
    torch.testing.assert_close(model.likelihood.mean(model.decode(z)), probabilities)
    their_bce = F.binary_cross_entropy(probabilities, x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(model.likelihood.nll(model.decode(z), x), their_bce)


@pytest.mark.parametrize("model,changes,sse_weight", [
    ("AE", {}, 1.0), ("RAE_L2", {}, 1.0),
    ("WAE_MMD", {"reconstruction_loss_scale": 2.0}, 2.0)])
def test_autoencoder_mse_is_a_gaussian_of_matching_scale(tmp_path, batch, model, changes,
                                                         sse_weight):
    """pythae's AE, RAE and WAE use w * SSE (no 1/2): a Gaussian of sigma^2 = 1 / (2 w)."""
    x, _ = batch
    state = write_pythae_folder(tmp_path, model, changes)
    converted = from_pythae(tmp_path)
    (code,) = encoder_heads(state, x, POINT)
    torch.testing.assert_close(converted.encode(x).mean, code)
    assert converted.config.sigma == pytest.approx(math.sqrt(1 / (2 * sse_weight)))
    decoded = decoder_probabilities(state, code)
    constant = FEATURES * (math.log(converted.config.sigma) + 0.5 * math.log(2 * math.pi))
    torch.testing.assert_close(converted.likelihood.nll(converted.decode(code), x),
                               sse_weight * ((x - decoded) ** 2).flatten(1).sum(1) + constant)


@pytest.mark.parametrize("model", sorted(PYTHAE_MODELS))
def test_every_supported_model_keeps_its_networks(tmp_path, batch, model):
    x, z = batch
    heads = PYTHAE_MODELS[model][2]
    state = write_pythae_folder(tmp_path, model)
    converted = from_pythae(tmp_path)
    torch.testing.assert_close(converted.encoder(x), torch.cat(encoder_heads(state, x, heads), 1))
    if model == "SVAE":
        z = F.normalize(z, dim=1)
    torch.testing.assert_close(converted.likelihood.mean(converted.decode(z)),
                               decoder_probabilities(state, z))


@pytest.mark.parametrize("model,changes,expected", [
    ("DisentangledBetaVAE", {}, {"gamma": 10.0, "capacity_max": 50.0, "capacity_steps": 0}),
    ("BetaTCVAE", {"beta": 6.0, "use_mss": False}, {"beta": 6.0, "estimator": "mws"}),
    ("IWAE", {"number_samples": 7}, {"k": 7}),
    ("MIWAE", {"number_gradient_estimates": 3, "number_samples": 4}, {"m": 3, "k": 4}),
    ("PIWAE", {"number_gradient_estimates": 2, "number_samples": 6}, {"m": 2, "k": 6}),
    ("CIWAE", {"number_samples": 10, "beta": 0.3}, {"k": 10, "beta": 0.3}),
    ("VAMP", {"number_components": 7}, {"num_pseudo_inputs": 7,
                                        "pseudo_inputs_init": "uniform"}),
    ("WAE_MMD", {"reg_weight": 3.0, "kernel_bandwidth": 2.0},
     {"lambda_": 3.0, "kernel": "imq", "kernel_scale": 4.0, "multiscale": True}),
    ("INFOVAE_MMD", {"kernel_choice": "rbf", "alpha": 0.5, "lbd": 2.0,
                     "reconstruction_loss": "bce"},
     {"alpha": 0.5, "lambda_": 2.0, "kernel": "rbf", "multiscale": False,
      "likelihood": "bernoulli"}),
    ("RAE_L2", {"embedding_weight": 0.01, "reg_weight": 1e-6}, {"beta": 0.01, "lambda_": 5e-7}),
])
def test_settings_map_onto_vaebench_fields(tmp_path, model, changes, expected):
    write_pythae_folder(tmp_path, model, changes)
    config = from_pythae(tmp_path).config.to_dict()
    assert {name: config[name] for name in expected} == pytest.approx(expected)


def test_vamp_pseudo_inputs_are_pythaes_layer_applied_to_the_identity(tmp_path):
    state = write_pythae_folder(tmp_path, "VAMP", {"number_components": 3})
    model = from_pythae(tmp_path)
    # pythae: hardtanh(Linear(eye(K)), 0, 1), row k = clamp(W[:, k] + b, 0, 1)
    expected = F.hardtanh(linear(state, "pseudo_inputs.0", torch.eye(3)), 0.0, 1.0)
    torch.testing.assert_close(model.prior.pseudo_inputs, expected.view(3, *INPUT_DIM))


def test_svae_posterior_from_pythaes_heads(tmp_path, batch):
    x, _ = batch
    state = write_pythae_folder(tmp_path, "SVAE")
    direction, log_concentration = encoder_heads(state, x, VMF)
    q = from_pythae(tmp_path).encode(x)
    torch.testing.assert_close(q.loc, direction / direction.norm(dim=1, keepdim=True))
    torch.testing.assert_close(q.concentration, F.softplus(log_concentration[:, 0]) + 1)


def test_custom_networks_are_refused_and_their_pickle_never_opened(tmp_path):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(RunsCode(marker))
    folder = tmp_path / "custom"
    write_pythae_folder(folder, changes={"uses_default_encoder": False})
    (folder / "encoder.pkl").write_bytes(payload)
    with pytest.raises(ValueError, match=r"encoder\.pkl.*never unpickles.*weights_only=True"):
        from_pythae(folder)
    assert not marker.exists()
    pickle.loads(payload).close()  # the payload is live: opening the pickle runs it
    assert marker.exists()


def test_a_config_naming_a_custom_decoder_is_refused(tmp_path):
    write_pythae_folder(tmp_path, changes={"uses_default_decoder": False})
    with pytest.raises(ValueError, match="its own decoder network"):
        from_pythae(tmp_path)


def test_model_pt_with_code_in_it_is_refused_by_weights_only_loading(tmp_path):
    marker = tmp_path / "unpickled"
    write_pythae_folder(tmp_path, state=RunsCode(marker))
    with pytest.raises(ValueError, match=r"more than tensors.*weights_only=True.*io\.open"):
        from_pythae(tmp_path)
    assert not marker.exists()


def test_truncated_weights_are_refused(tmp_path):
    write_pythae_folder(tmp_path)
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        from_pythae(tmp_path)


def test_weights_of_other_networks_are_refused(tmp_path):
    state = pythae_state(GAUSSIAN)
    state["encoder.layers.1.0.weight"] = torch.zeros(HIDDEN, HIDDEN)
    state["encoder.embedding.weight"] = torch.zeros(LATENT, 64)
    write_pythae_folder(tmp_path, state=state)
    with pytest.raises(ValueError, match=r"not those of pythae's default networks.*"
                                         r"unexpected: encoder\.layers\.1\.0\.weight.*"
                                         r"encoder\.embedding\.weight \(4, 64\)"):
        from_pythae(tmp_path)


def test_unknown_and_refused_models_name_what_converts(tmp_path):
    write_pythae_folder(tmp_path, changes={"name": "NotAModelConfig"})
    with pytest.raises(ValueError, match="not a model vaebench knows.*AE, BetaTCVAE"):
        from_pythae(tmp_path)
    write_pythae_folder(tmp_path, changes={"name": "VQVAEConfig"})
    with pytest.raises(ValueError, match="VQVAE, which does not convert.*Models that convert"):
        from_pythae(tmp_path)


def test_unknown_settings_are_refused(tmp_path):
    write_pythae_folder(tmp_path, changes={"dropout": 0.5})
    with pytest.raises(ValueError, match="unknown to the converter: dropout"):
        from_pythae(tmp_path)


def test_settings_vaebench_refuses_name_pythaes_fields(tmp_path):
    # pythae's default InfoVAE (lbd 1e-3) weighs its MMD term alpha + lbd - 1 < 0
    write_pythae_folder(tmp_path, "INFOVAE_MMD", {"lbd": 0.001})
    with pytest.raises(ValueError, match="lbd=0.001.*must not be negative"):
        from_pythae(tmp_path)


def test_cli_converts_and_the_folder_loads_back(tmp_path, batch, capsys):
    x, z = batch
    write_pythae_folder(tmp_path / "pythae", "VAMP", {"number_components": 3})
    assert main(["convert-pythae", str(tmp_path / "pythae"), str(tmp_path / "out")]) == 0
    assert "converted to a vaebench model" in capsys.readouterr().out
    expected, loaded = from_pythae(tmp_path / "pythae"), load_model(tmp_path / "out")
    assert loaded.config == expected.config
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)
    torch.testing.assert_close(loaded.encoder(x), expected.encoder(x))
    torch.testing.assert_close(loaded.decode(z), expected.decode(z))


def test_cli_refusal_is_one_error_line(tmp_path, capsys):
    write_pythae_folder(tmp_path / "pythae")
    (tmp_path / "pythae" / "decoder.pkl").write_bytes(b"not read")
    assert main(["convert-pythae", str(tmp_path / "pythae"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaebench: error:") and "decoder.pkl" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_mlp_decoder_output_activation():
    decoder = MLPDecoder(LATENT, INPUT_DIM, hidden=[8], output_activation="sigmoid")
    out = decoder(torch.randn(3, LATENT) * 100)
    assert out.shape == (3, *INPUT_DIM) and bool(((out >= 0) & (out <= 1)).all())
    with pytest.raises(ValueError, match="output_activation must be one of"):
        MLPDecoder(LATENT, INPUT_DIM, output_activation="tanh")
