"""A way in from pythae: read a folder written by pythae's ``model.save()`` as a vaebench model.

Such a folder holds ``model_config.json`` (the model's settings), ``model.pt`` (its weights,
``{"model_state_dict": ...}`` written by ``torch.save``), ``environment.json`` and, for a
model built around the user's own networks, ``encoder.pkl`` / ``decoder.pkl``: pickled code.

Trust: a saved model is data, never code (DESIGN.md). ``model.pt`` is read only with
``torch.load(..., weights_only=True)``, which builds tensors and plain containers and refuses
anything else; the pickled networks are never opened, and a folder that has them (or whose
config says it used its own networks) is refused with how to rebuild it by hand.

What converts: the models that pythae and vaebench both have, built with pythae's default
networks (``pythae.models.nn.default_architectures``: a 512-unit ReLU MLP encoder with one
linear head per output, a 512-unit ReLU MLP decoder ending in a sigmoid) and whose settings
mean the same in both libraries; see :data:`CONVERSIONS` and :data:`REFUSED`.

The reconstruction term: pythae's ``"bce"`` is the Bernoulli likelihood (pythae's decoder
outputs probabilities, vaebench's the logits before that same sigmoid). pythae's ``"mse"``
is w * sum_d (x_d - x_hat_d)^2 per sample, with w = 1/2 in the VAE family, 1 in AE and
RAE, ``reconstruction_loss_scale`` in WAE: that is the Gaussian NLL with
sigma^2 = 1 / (2 w), up to its constant (sigma = 1 for a VAE), around the decoder's sigmoid
output. See docs/pythae.md.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from vaebench.files import read_json_object
from vaebench.kernels import WAE_SCALES
from vaebench.models import Autoencoder, create_model
from vaebench.serialization import load_weights

__all__ = ["CONVERSIONS", "REFUSED", "from_pythae", "supported_models"]

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "model_config.json"
PICKLED_NETWORKS = {"encoder": "encoder.pkl", "decoder": "decoder.pkl"}
#: Width of the hidden layer of pythae's default encoder and decoder.
HIDDEN = 512
#: Fields every pythae model config has besides its own.
COMMON_FIELDS = ("name", "input_dim", "latent_dim", "uses_default_encoder",
                 "uses_default_decoder")

# The encoder heads of pythae's default encoders, in the order vaebench concatenates them.
GAUSSIAN = ("embedding", "log_var")  # Encoder_VAE_MLP: mean, log-variance
POINT = ("embedding",)  # Encoder_AE_MLP: the code
VMF = ("embedding", "log_concentration")  # Encoder_SVAE_MLP: direction, raw concentration
#: pythae's layers (weight and bias) and the vaebench MLP layers they become.
LAYERS = {"encoder.layers.0.0": "encoder.net.0", "decoder.layers.0.0": "decoder.net.0",
          "decoder.layers.1.0": "decoder.net.2"}


def _vae_sse_weight(config: dict[str, Any]) -> float:
    """pythae's VAE family: 0.5 * F.mse_loss(...).sum(-1)."""
    return 0.5


def _ae_sse_weight(config: dict[str, Any]) -> float:
    """pythae's AE and RAE: F.mse_loss(...).sum(-1)."""
    return 1.0


def _wae_sse_weight(config: dict[str, Any]) -> float:
    """pythae's WAE: reconstruction_loss_scale * F.mse_loss(...).sum(-1)."""
    scale = config["reconstruction_loss_scale"]
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"reconstruction_loss_scale must be a positive number to be a "
                         f"likelihood's weight, got {scale!r}")
    return float(scale)


@dataclass(frozen=True)
class Conversion:
    """How one pythae model becomes a vaebench model."""

    model: str
    """The vaebench model's name."""
    heads: tuple[str, ...]
    """pythae's encoder heads, concatenated into vaebench's last encoder layer."""
    renamed: dict[str, str] = field(default_factory=dict)
    """pythae config field -> vaebench config field, same value."""
    derived: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """vaebench fields computed from pythae's (reads the fields in ``reads``)."""
    reads: tuple[str, ...] = ()
    """pythae fields read by ``derived`` or deliberately left out (see its docstring)."""
    fixed: dict[str, Any] = field(default_factory=dict)
    """vaebench fields set whatever pythae's config says."""
    sse_weight: Callable[[dict[str, Any]], float] = _vae_sse_weight
    """w in pythae's "mse" term w * sum (x - x_hat)^2."""
    extra_weights: Callable[[dict[str, Any], int], dict[str, tuple[int, ...]]] | None = None
    """pythae's weights besides the networks: key -> shape, from (config, D)."""
    convert_extra: Callable[[dict[str, torch.Tensor], dict[str, Any]],
                            dict[str, torch.Tensor]] | None = None
    """vaebench tensors from the extra weights."""

    @property
    def has_reconstruction_choice(self) -> bool:
        """Whether pythae's config chooses "bce" or "mse" (the VAE family does)."""
        return self.sse_weight is _vae_sse_weight

    def known_fields(self) -> set[str]:
        choice = ("reconstruction_loss",) if self.has_reconstruction_choice else ()
        return {*COMMON_FIELDS, *choice, *self.renamed, *self.reads}


def _tc_estimator(config: dict[str, Any]) -> dict[str, Any]:
    """use_mss: minibatch stratified (True) or weighted (False) sampling."""
    return {"estimator": "mss" if config["use_mss"] else "mws"}


def _capacity(config: dict[str, Any]) -> dict[str, Any]:
    """pythae's beta weighs |KL - C|, vaebench's gamma. pythae raises C over
    ``warmup_epoch`` epochs, vaebench over steps, unknown here: the converted model starts
    at the full capacity, where pythae's run stands after its warm-up."""
    return {"gamma": config["beta"], "capacity_max": config["C"]}


def _mmd_kernel(config: dict[str, Any]) -> dict[str, Any]:
    """pythae's kernel bandwidth C = 2 d bandwidth^2 (times each of ``scales`` for IMQ) is
    vaebench's C = 2 d kernel_scale (times WAE_SCALES with ``multiscale``)."""
    kernel, scales = config["kernel_choice"], config["scales"]
    if kernel == "rbf" or scales is None or list(scales) == [1.0]:
        multiscale = False  # pythae's RBF kernel has one scale
    elif [float(s) for s in scales] == list(WAE_SCALES):
        multiscale = True
    else:
        raise ValueError(f"scales {scales} has no vaebench counterpart: vaebench's MMD sums "
                         f"the kernel over one bandwidth or over {list(WAE_SCALES)}")
    return {"kernel": kernel, "kernel_scale": config["kernel_bandwidth"] ** 2,
            "multiscale": multiscale}


def _wae(config: dict[str, Any]) -> dict[str, Any]:
    return {**_mmd_kernel(config), "lambda_": config["reg_weight"]}


def _info_vae(config: dict[str, Any]) -> dict[str, Any]:
    return {**_mmd_kernel(config), "alpha": config["alpha"], "lambda_": config["lbd"]}


def _rae_l2(config: dict[str, Any]) -> dict[str, Any]:
    """pythae applies ``reg_weight`` as the decoder optimizer's weight decay (its training
    pipeline does), the gradient of (reg_weight / 2) ||theta||^2; vaebench's term is
    lambda_ ||theta||^2."""
    return {"beta": config["embedding_weight"], "lambda_": config["reg_weight"] / 2}


def _vamp_extra_weights(config: dict[str, Any], features: int) -> dict[str, tuple[int, ...]]:
    """pythae's pseudo-input layer: Linear(number_components, D) on the identity."""
    components = config["number_components"]
    return {"pseudo_inputs.0.weight": (features, components),
            "pseudo_inputs.0.bias": (features,)}


def _vamp_pseudo_inputs(state: dict[str, torch.Tensor],
                        config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """pythae's k-th pseudo-input is hardtanh(W e_k + b, 0, 1) = clamp(W[:, k] + b, 0, 1);
    vaebench holds the pseudo-inputs themselves."""
    inputs = (state["pseudo_inputs.0.weight"].T + state["pseudo_inputs.0.bias"]).clamp(0, 1)
    return {"prior.pseudo_inputs": inputs.reshape(-1, *config["input_dim"])}


_IWAE_FIELDS = {"number_samples": "k"}
_MIWAE_FIELDS = {"number_samples": "k", "number_gradient_estimates": "m"}
_MMD_FIELDS = ("kernel_choice", "kernel_bandwidth", "scales")

#: The pythae models that convert, by pythae's model name.
CONVERSIONS: dict[str, Conversion] = {
    "AE": Conversion("ae", POINT, sse_weight=_ae_sse_weight),
    "VAE": Conversion("vae", GAUSSIAN),
    "BetaVAE": Conversion("beta_vae", GAUSSIAN, renamed={"beta": "beta"}),
    "DisentangledBetaVAE": Conversion(
        "disentangled_beta_vae", GAUSSIAN, derived=_capacity,
        reads=("beta", "C", "warmup_epoch"), fixed={"capacity_steps": 0}),
    "BetaTCVAE": Conversion("beta_tc_vae", GAUSSIAN, derived=_tc_estimator, reads=("use_mss",),
                            renamed={"alpha": "alpha", "beta": "beta", "gamma": "gamma"}),
    "IWAE": Conversion("iwae", GAUSSIAN, renamed=_IWAE_FIELDS),
    "MIWAE": Conversion("miwae", GAUSSIAN, renamed=_MIWAE_FIELDS),
    "PIWAE": Conversion("piwae", GAUSSIAN, renamed=_MIWAE_FIELDS),
    "CIWAE": Conversion("ciwae", GAUSSIAN, renamed={**_IWAE_FIELDS, "beta": "beta"}),
    "SVAE": Conversion("svae", VMF),
    # linear_scheduling_steps: pythae's KL warm-up in epochs, over once trained (and off in
    # eval mode in both libraries). pseudo_inputs_init "uniform" keeps the converted
    # pseudo-inputs when training goes on ("data" would replace them at the first step).
    "VAMP": Conversion("vamp", GAUSSIAN, renamed={"number_components": "num_pseudo_inputs"},
                       reads=("linear_scheduling_steps",),
                       fixed={"pseudo_inputs_init": "uniform"},
                       extra_weights=_vamp_extra_weights, convert_extra=_vamp_pseudo_inputs),
    "WAE_MMD": Conversion("wae", POINT, derived=_wae, sse_weight=_wae_sse_weight,
                          reads=(*_MMD_FIELDS, "reg_weight", "reconstruction_loss_scale")),
    "INFOVAE_MMD": Conversion("info_vae", GAUSSIAN, derived=_info_vae,
                              reads=(*_MMD_FIELDS, "alpha", "lbd")),
    "RAE_L2": Conversion("rae_l2", POINT, derived=_rae_l2, sse_weight=_ae_sse_weight,
                         reads=("embedding_weight", "reg_weight")),
}

#: The pythae models both libraries have that do not convert, and why.
REFUSED: dict[str, str] = {
    "VQVAE": "pythae's default VQ-VAE quantizes each of the latent_dim coordinates on its own "
             "(codes of dimension 1), which no vaebench network reproduces, and it averages "
             "its quantization terms over positions where vaebench sums them",
    "RAE_GP": "pythae's gradient penalty differentiates the reconstruction with respect to "
              "the input x (through encoder and decoder); vaebench's rae_gp penalizes the "
              "decoder's gradient with respect to z",
    "MSSSIM_VAE": "the reconstruction terms differ: pythae's 1 - MS-SSIM with a fixed window, "
                  "vaebench's D (1 - MS-SSIM) with a window sized to the image",
    "Adversarial_AE": "the discriminators differ: pythae's is a ReLU MLP with one sigmoid "
                      "output, vaebench's a leaky-ReLU MLP with two logits",
    "FactorVAE": "the discriminators differ: pythae's 1000-unit MLP is not vaebench's "
                 "leaky-ReLU discriminator",
    "VAEGAN": "the discriminators and the feature-space reconstruction differ",
    "HVAE": "under 'bce' pythae reads its default decoder's sigmoid output as Bernoulli "
            "logits, a likelihood vaebench's hvae does not have, and its leapfrog "
            "parameters have no converter yet",
    "RHVAE": "its metric network, centroids and metric tensors have no converter yet",
    "VAE_IAF": "pythae's MADE networks (their masks and the absence of a context) differ from "
               "vaebench's IAF steps",
    "VAE_LinNF": "pythae's planar and radial flows are unconstrained, vaebench's keep every "
                 "flow invertible (Rezende and Mohamed 2015, Appendix A)",
    "PoincareVAE": "vaebench's Poincare VAE decodes through a gyroplane layer, so its "
                   "networks differ from pythae's default MLPs",
}

#: vaebench's counterpart of each refused model (for the rebuild advice).
_COUNTERPARTS = {"VQVAE": "vqvae", "RAE_GP": "rae_gp", "MSSSIM_VAE": "msssim_vae",
                 "Adversarial_AE": "adversarial_ae", "FactorVAE": "factor_vae",
                 "VAEGAN": "vaegan", "HVAE": "hvae", "RHVAE": "rhvae", "VAE_IAF": "vae_iaf",
                 "VAE_LinNF": "vae_linnf", "PoincareVAE": "poincare_vae"}


def supported_models() -> list[str]:
    """The pythae model names that convert."""
    return sorted(CONVERSIONS)


def from_pythae(folder: str | Path) -> Autoencoder:
    """The vaebench model equivalent to the pythae model saved in ``folder``, in eval mode.

    Raises a ValueError naming the file and the reason for a folder that does not convert:
    custom networks (pickled code, never opened), a model without a vaebench counterpart
    with the same networks and objective, settings with no vaebench equivalent, or weights
    that are not plain tensors of pythae's default networks. Save the result with
    :func:`vaebench.save_model`.
    """
    folder = Path(folder)
    config = _read_config(folder)
    name = _model_name(config, folder)
    _refuse_custom_networks(folder, config, name)
    conversion = _conversion(name, folder)
    _check_fields(config, conversion, folder)
    model = _build_model(config, conversion, folder)
    state = _read_weights(folder / WEIGHTS_FILE)
    _check_weights(state, _pythae_shapes(config, conversion), folder / WEIGHTS_FILE)
    weights = {**model.state_dict(), **_converted_weights(state, config, conversion)}
    load_weights(model, weights, folder / WEIGHTS_FILE)
    return model.eval()


# --- reading and checking the folder ----------------------------------------------------------
def _read_config(folder: Path) -> dict[str, Any]:
    config = read_json_object(folder / CONFIG_FILE, "pythae model config", {
        "name": (str, "a pythae config class name (a string)"),
        "input_dim": (list, "the data shape (a list of positive integers)"),
        "latent_dim": (int, "the latent dimension (an integer)"),
    })
    if not all(isinstance(d, int) and d > 0 for d in config["input_dim"]):
        raise ValueError(f"{folder / CONFIG_FILE}: field 'input_dim' must be a list of "
                         f"positive integers, got {config['input_dim']}")
    return config


def _model_name(config: dict[str, Any], folder: Path) -> str:
    """pythae's model name from its config class name ("VAEConfig" -> "VAE")."""
    name = config["name"].removesuffix("Config").removesuffix("_")
    if name not in CONVERSIONS and name not in REFUSED:
        raise ValueError(f"{folder / CONFIG_FILE} names the pythae config {config['name']!r}, "
                         f"not a model vaebench knows; models that convert: "
                         f"{', '.join(supported_models())}")
    return name


def _refuse_custom_networks(folder: Path, config: dict[str, Any], name: str) -> None:
    """Refuse a model with its own networks, whose code pythae pickled: never opened here."""
    custom = [role for role, file in PICKLED_NETWORKS.items()
              if (folder / file).exists() or config.get(f"uses_default_{role}") is False]
    if not custom:
        return
    target = CONVERSIONS[name].model if name in CONVERSIONS else _COUNTERPARTS[name]
    networks = ", ".join(f"{role}=My{role.capitalize()}()" for role in custom)
    raise ValueError(
        f"{folder} holds a pythae {name} with its own {' and '.join(custom)} network(s), "
        f"which pythae saves as pickled code ({', '.join(PICKLED_NETWORKS[r] for r in custom)})"
        f"; vaebench never unpickles a file (that runs code the file names) and did not open "
        f"them. To bring the weights over, build the model with equivalent networks, "
        f"vaebench.create_model({target!r}, input_dim=..., latent_dim=..., {networks}), and "
        f"load the tensors of {WEIGHTS_FILE}, read with torch.load(path, weights_only=True)"
        f"['model_state_dict'] and renamed to your modules' keys, with model.load_state_dict")


def _conversion(name: str, folder: Path) -> Conversion:
    if name in REFUSED:
        raise ValueError(f"{folder} holds a pythae {name}, which does not convert: "
                         f"{REFUSED[name]}. Models that convert: "
                         f"{', '.join(supported_models())}")
    return CONVERSIONS[name]


def _check_fields(config: dict[str, Any], conversion: Conversion, folder: Path) -> None:
    """Every pythae field must be one the conversion reads: an unknown one may change what
    the model is."""
    needed = conversion.known_fields()
    unknown = sorted(set(config) - needed)
    missing = sorted(needed - set(config))
    if unknown or missing:
        problems = [f"fields unknown to the converter: {', '.join(unknown)}"] if unknown else []
        problems += [f"missing fields: {', '.join(missing)}"] if missing else []
        raise ValueError(f"{folder / CONFIG_FILE} is not the config pythae 0.1 writes for "
                         f"{config['name']}: {'; '.join(problems)}")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in pythae's ``model.pt``, loaded as plain tensors only."""
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}: not a folder written by "
                                "pythae's model.save()")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds more than tensors: torch.load(weights_only=True) "
                         f"refused it ({_unpickler_reason(err)}). Loading it fully would run "
                         "code the file names; vaebench does not") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is truncated or corrupt and cannot be read: {err}") from None
    state = payload.get("model_state_dict") if isinstance(payload, dict) else None
    if not (isinstance(state, dict) and
            all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ValueError(f"{path} is not a pythae model file: it must hold a dict whose "
                         "'model_state_dict' maps names to tensors")
    return state


def _unpickler_reason(err: Exception) -> str:
    """What torch's weights-only unpickler refused, without its advice to trust the file."""
    text = str(err)
    _, found, reason = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (reason if found else text).splitlines() if line.strip()]
    return lines[0].split(". Please use")[0] if lines else type(err).__name__


# --- building the model and its weights --------------------------------------------------------
def _build_model(config: dict[str, Any], conversion: Conversion, folder: Path) -> Autoencoder:
    """The vaebench model with the networks and settings of pythae's."""
    fields = {new: config[old] for old, new in conversion.renamed.items()}
    try:
        if conversion.derived is not None:
            fields.update(conversion.derived(config))
        fields.update({**_likelihood_fields(config, conversion), **conversion.fixed})
        return create_model(conversion.model, input_dim=tuple(config["input_dim"]),
                            latent_dim=config["latent_dim"], encoder="mlp",
                            encoder_kwargs={"hidden": [HIDDEN]}, decoder="mlp", **fields)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                             for e in err.errors())
        raise ValueError(f"{folder / CONFIG_FILE}: pythae's settings "
                         f"({_own_fields(config, conversion)}) do not make a valid vaebench "
                         f"{conversion.model}: {problems}") from None
    except (ValueError, TypeError) as err:
        raise ValueError(f"{folder / CONFIG_FILE}: {err}") from None


def _own_fields(config: dict[str, Any], conversion: Conversion) -> str:
    """The model's own pythae fields as ``name=value`` text, for error messages."""
    own = sorted(conversion.known_fields() - set(COMMON_FIELDS))
    return ", ".join(f"{name}={config[name]!r}" for name in own) or "none of its own"


def _likelihood_fields(config: dict[str, Any], conversion: Conversion) -> dict[str, Any]:
    """vaebench's likelihood and decoder for pythae's reconstruction term."""
    loss = config["reconstruction_loss"] if conversion.has_reconstruction_choice else "mse"
    if loss == "bce":
        return {"likelihood": "bernoulli", "decoder_kwargs": {"hidden": [HIDDEN]}}
    if loss != "mse":
        raise ValueError(f"reconstruction_loss must be 'bce' or 'mse', got {loss!r}")
    sigma = math.sqrt(1.0 / (2.0 * conversion.sse_weight(config)))
    return {"likelihood": "gaussian", "sigma": sigma,
            "decoder_kwargs": {"hidden": [HIDDEN], "output_activation": "sigmoid"}}


def _pythae_shapes(config: dict[str, Any], conversion: Conversion) -> dict[str, tuple[int, ...]]:
    """Every tensor of the pythae model with its default networks: name -> shape."""
    features, latent = math.prod(config["input_dim"]), config["latent_dim"]
    shapes = {"encoder.layers.0.0.weight": (HIDDEN, features),
              "encoder.layers.0.0.bias": (HIDDEN,),
              "decoder.layers.0.0.weight": (HIDDEN, latent), "decoder.layers.0.0.bias": (HIDDEN,),
              "decoder.layers.1.0.weight": (features, HIDDEN),
              "decoder.layers.1.0.bias": (features,)}
    for head in conversion.heads:
        rows = 1 if head == "log_concentration" else latent
        shapes.update({f"encoder.{head}.weight": (rows, HIDDEN), f"encoder.{head}.bias": (rows,)})
    if conversion.extra_weights is not None:
        shapes.update(conversion.extra_weights(config, features))
    return shapes


def _check_weights(state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]],
                   path: Path) -> None:
    """The state dict must be exactly the default networks' tensors, with their shapes."""
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {shapes[k]})" for k in sorted(shapes)
             if k in state and tuple(state[k].shape) != shapes[k]]
    if missing or unexpected or wrong:
        problems = [f"{what}: {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}"
                    for what, names in (("missing", missing), ("unexpected", unexpected),
                                        ("wrong shapes", wrong)) if names]
        raise ValueError(f"the weights in {path} are not those of pythae's default networks "
                         f"for its config ({'; '.join(problems)})")


def _converted_weights(state: dict[str, torch.Tensor], config: dict[str, Any],
                       conversion: Conversion) -> dict[str, torch.Tensor]:
    """pythae's tensors under vaebench's names; the encoder heads concatenated in order."""
    weights = {f"{new}.{kind}": state[f"{old}.{kind}"]
               for old, new in LAYERS.items() for kind in ("weight", "bias")}
    for kind in ("weight", "bias"):
        weights[f"encoder.net.2.{kind}"] = torch.cat(
            [state[f"encoder.{head}.{kind}"] for head in conversion.heads])
    if conversion.convert_extra is not None:
        weights.update(conversion.convert_extra(state, config))
    return weights
