"""Ways to draw latent codes of a trained model for generation.

``create_sampler(name, model)`` builds one; ``sampler.fit(model, train_data)`` fits it on
the model's training codes where it needs fitting; ``sampler.generate(model, n, seed=0)``
decodes its draws. ``samplers_for(model)`` lists those that serve a model, and
``save_sampler`` / ``load_sampler`` keep fitted samplers beside the model, as safely as
models (safetensors and JSON).
"""

from vaebench.samplers.base import Sampler, SamplerConfig, encode_codes
from vaebench.samplers.flow import IAFSampler, MAFSampler
from vaebench.samplers.gmm import GaussianMixtureSampler
from vaebench.samplers.manifold import ManifoldSampler
from vaebench.samplers.normal import (
    HypersphereSampler,
    PoincareSampler,
    PriorSampler,
    VampSampler,
)
from vaebench.samplers.pixelcnn import GatedPixelCNN, PixelCNNSampler, PixelCNNSamplerConfig
from vaebench.samplers.registry import (
    create_sampler,
    get_sampler_class,
    list_samplers,
    register_sampler,
    samplers_for,
)
from vaebench.samplers.storage import load_sampler, save_sampler, saved_samplers
from vaebench.samplers.two_stage import TwoStageSampler

__all__ = ["GatedPixelCNN", "GaussianMixtureSampler", "HypersphereSampler", "IAFSampler",
           "MAFSampler", "ManifoldSampler", "PixelCNNSampler", "PixelCNNSamplerConfig",
           "PoincareSampler", "PriorSampler", "Sampler", "SamplerConfig", "TwoStageSampler",
           "VampSampler", "create_sampler", "encode_codes", "get_sampler_class",
           "list_samplers", "load_sampler", "register_sampler", "samplers_for", "save_sampler",
           "saved_samplers"]
