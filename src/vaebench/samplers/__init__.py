"""Ways to draw latent codes for generation: learned priors fitted after training."""

from vaebench.samplers.pixelcnn import GatedPixelCNN

__all__ = ["GatedPixelCNN"]
