"""Stateful layers built from :mod:`npcbam.ops`: parameters, gradients, forward, backward."""

from npcbam.nn.activation import ReLU
from npcbam.nn.bam import BAM
from npcbam.nn.batchnorm import BatchNorm1d, BatchNorm2d
from npcbam.nn.cbam import CBAM
from npcbam.nn.channel_attention import ChannelAttention
from npcbam.nn.classifier import AttentionClassifier
from npcbam.nn.conv import Conv2d, ConvTranspose2d
from npcbam.nn.conv_cbam import ConvCBAM
from npcbam.nn.eca import ECA
from npcbam.nn.fpn import ResnetFPN4CBAM
from npcbam.nn.linear import Linear
from npcbam.nn.module import Module
from npcbam.nn.official_cbam import OfficialCBAM
from npcbam.nn.residual import ResidualBlockCBAM
from npcbam.nn.se import SE
from npcbam.nn.sequential import Sequential
from npcbam.nn.spatial_attention import SpatialAttention

__all__ = [
    "BAM",
    "CBAM",
    "ECA",
    "SE",
    "AttentionClassifier",
    "BatchNorm1d",
    "BatchNorm2d",
    "ChannelAttention",
    "Conv2d",
    "ConvCBAM",
    "ConvTranspose2d",
    "Linear",
    "Module",
    "OfficialCBAM",
    "ReLU",
    "ResidualBlockCBAM",
    "ResnetFPN4CBAM",
    "Sequential",
    "SpatialAttention",
]
