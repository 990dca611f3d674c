"""Model families and the registry."""

from vaebench.models.adversarial import VAEGAN, AdversarialAE, AdversarialAEConfig, VAEGANConfig
from vaebench.models.ae import AE, AEConfig
from vaebench.models.base import Autoencoder, ModelOutput, Objective
from vaebench.models.beta_tc_vae import BetaTCVAE, BetaTCVAEConfig
from vaebench.models.beta_vae import (
    BetaVAE,
    BetaVAEConfig,
    DisentangledBetaVAE,
    DisentangledBetaVAEConfig,
)
from vaebench.models.cvae import CVAE, CVAEConfig
from vaebench.models.dip_vae import DIPVAE, DIPVAEConfig
from vaebench.models.factor_vae import FactorVAE, FactorVAEConfig
from vaebench.models.hvae import HVAE, HVAEConfig
from vaebench.models.info_vae import InfoVAE, InfoVAEConfig
from vaebench.models.iwae import (
    CIWAE,
    IWAE,
    MIWAE,
    PIWAE,
    CIWAEConfig,
    IWAEConfig,
    MIWAEConfig,
    PIWAEConfig,
)
from vaebench.models.msssim_vae import MSSSIMVAE, MSSSIMVAEConfig
from vaebench.models.poincare_vae import PoincareVAE, PoincareVAEConfig
from vaebench.models.rae import RAEGP, RAEL2, RAEGPConfig, RAEL2Config
from vaebench.models.registry import create_model, get_model_class, list_models, register_model
from vaebench.models.rhvae import RHVAE, RHVAEConfig
from vaebench.models.svae import SVAE, SVAEConfig
from vaebench.models.topk_sae import TopKSAE, TopKSAEConfig
from vaebench.models.vae import VAE, VAEConfig
from vaebench.models.vae_flows import VAEIAF, VAEIAFConfig, VAELinNF, VAELinNFConfig
from vaebench.models.vamp import VampPriorConfig, VampPriorVAE
from vaebench.models.vqvae import (
    FSQVAE,
    HRQVAE,
    LFQVAE,
    VQVAE,
    VQVAEEMA,
    FSQVAEConfig,
    GumbelVQVAE,
    GumbelVQVAEConfig,
    HRQVAEConfig,
    LFQVAEConfig,
    QuantizedAutoencoder,
    QuantizedConfig,
    VQVAEConfig,
    VQVAEEMAConfig,
)
from vaebench.models.wae import WAE, WAEConfig

__all__ = ["AE", "AEConfig", "Autoencoder", "ModelOutput", "Objective", "VAE", "VAEConfig",
           "create_model", "get_model_class", "list_models", "register_model"]
__all__ += ["BetaTCVAE", "BetaTCVAEConfig", "BetaVAE", "BetaVAEConfig", "CVAE",
            "CVAEConfig", "DisentangledBetaVAE", "DisentangledBetaVAEConfig", "FactorVAE",
            "FactorVAEConfig", "VampPriorConfig", "VampPriorVAE"]
__all__ += ["FSQVAE", "FSQVAEConfig", "HRQVAE", "HRQVAEConfig", "QuantizedAutoencoder",
            "QuantizedConfig", "VQVAE", "VQVAEConfig", "VQVAEEMA", "VQVAEEMAConfig"]
__all__ += ["InfoVAE", "InfoVAEConfig", "MSSSIMVAE", "MSSSIMVAEConfig", "RAEGP", "RAEGPConfig",
            "RAEL2", "RAEL2Config", "WAE", "WAEConfig"]
__all__ += ["CIWAE", "CIWAEConfig", "IWAE", "IWAEConfig", "MIWAE", "MIWAEConfig", "PIWAE",
            "PIWAEConfig"]
__all__ += ["VAEIAF", "VAEIAFConfig", "VAELinNF", "VAELinNFConfig"]
__all__ += ["SVAE", "SVAEConfig"]
__all__ += ["PoincareVAE", "PoincareVAEConfig"]
__all__ += ["HVAE", "HVAEConfig"]
__all__ += ["RHVAE", "RHVAEConfig"]
__all__ += ["DIPVAE", "DIPVAEConfig", "TopKSAE", "TopKSAEConfig"]
__all__ += ["AdversarialAE", "AdversarialAEConfig", "VAEGAN", "VAEGANConfig"]
__all__ += ["GumbelVQVAE", "GumbelVQVAEConfig", "LFQVAE", "LFQVAEConfig"]
