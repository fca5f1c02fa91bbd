"""Generator, discriminator and segmentation models, registered by name.

Importing this package registers every model, so `create_model(name, config)` can rebuild any
of them from a checkpoint's config.json.
"""

from synthmed.training.models.dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator
from synthmed.training.models.pix2pix import (
    PatchDiscriminator,
    PatchDiscriminatorConfig,
    UNetGenerator,
    UNetGeneratorConfig,
)
from synthmed.training.models.registry import create_model, list_models, register_model
from synthmed.training.models.segmentation import SegmentationUNet, SegmentationUNetConfig
from synthmed.training.models.stylegan2 import (
    CStyleGAN2Config,
    CStyleGAN2Discriminator,
    CStyleGAN2Generator,
)

__all__ = [
    "CStyleGAN2Config",
    "CStyleGAN2Discriminator",
    "CStyleGAN2Generator",
    "DCGANConfig",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "PatchDiscriminator",
    "PatchDiscriminatorConfig",
    "SegmentationUNet",
    "SegmentationUNetConfig",
    "UNetGenerator",
    "UNetGeneratorConfig",
    "create_model",
    "list_models",
    "register_model",
]
