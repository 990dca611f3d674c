"""vaebench: generative autoencoders under one implementation, with honest likelihoods."""

__version__ = "0.1.0"

from vaebench.config import ModelConfig
from vaebench.integrations import hub  # huggingface_hub itself is imported only when used
from vaebench.integrations.pythae import from_pythae
from vaebench.models import (
    AE,
    VAE,
    AEConfig,
    Autoencoder,
    ModelOutput,
    VAEConfig,
    create_model,
    list_models,
    register_model,
)
from vaebench.nn import register_network
from vaebench.serialization import load_model, save_model
from vaebench.training import Trainer, TrainerConfig

__all__ = ["AE", "AEConfig", "Autoencoder", "ModelConfig", "ModelOutput", "Trainer",
           "TrainerConfig", "VAE", "VAEConfig", "__version__", "create_model", "hub", "from_pythae",
           "list_models", "load_model", "register_model", "register_network", "save_model"]
