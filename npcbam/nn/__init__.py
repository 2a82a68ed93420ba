"""Stateful layers built from :mod:`npcbam.ops`: parameters, gradients, forward, backward."""

from npcbam.nn.cbam import CBAM
from npcbam.nn.channel_attention import ChannelAttention
from npcbam.nn.module import Module
from npcbam.nn.spatial_attention import SpatialAttention

__all__ = ["CBAM", "ChannelAttention", "Module", "SpatialAttention"]
