"""Model families and the registry."""

from vaebench.models.ae import AE, AEConfig
from vaebench.models.base import Autoencoder, ModelOutput, Objective
from vaebench.models.registry import create_model, get_model_class, list_models, register_model
from vaebench.models.vae import VAE, VAEConfig

__all__ = ["AE", "AEConfig", "Autoencoder", "ModelOutput", "Objective", "VAE", "VAEConfig",
           "create_model", "get_model_class", "list_models", "register_model"]
