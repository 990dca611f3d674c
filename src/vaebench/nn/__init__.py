"""Encoder and decoder networks: built-in ones by name, a user's registered classes."""

from __future__ import annotations

from vaebench.nn.conv import ConvDecoder, ConvEncoder
from vaebench.nn.mlp import MLPDecoder, MLPEncoder
from vaebench.nn.registry import (
    UntrustedCodeError,
    build_network,
    network_class,
    network_name,
    register_network,
    registered_networks,
    trusting_code,
)
from vaebench.nn.spatial import SpatialDecoder, SpatialEncoder

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "SpatialDecoder",
           "SpatialEncoder", "UntrustedCodeError", "build_network", "network_class",
           "network_name", "register_network", "registered_networks", "trusting_code"]
