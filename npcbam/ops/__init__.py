"""Pure functions, one concept per file: every op a ``*_forward -> (out, cache)`` and
``*_backward(dout, cache)`` pair, with naive loop oracles in :mod:`npcbam.ops.reference`."""

from npcbam.ops.activations import relu_backward, relu_forward, sigmoid_backward, sigmoid_forward
from npcbam.ops.broadcast import (
    broadcast_add_backward,
    broadcast_add_forward,
    broadcast_multiply_backward,
    broadcast_multiply_forward,
)
from npcbam.ops.conv import conv2d_backward, conv2d_forward
from npcbam.ops.conv1d_channels import conv1d_channels_backward, conv1d_channels_forward
from npcbam.ops.gating import concat_backward, concat_forward, gate_backward, gate_forward
from npcbam.ops.im2col import col2im, im2col
from npcbam.ops.linear import linear_backward, linear_forward
from npcbam.ops.mlp import shared_mlp_backward, shared_mlp_forward
from npcbam.ops.pooling import (
    channel_avg_pool_backward,
    channel_avg_pool_forward,
    channel_max_pool_backward,
    channel_max_pool_forward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    global_max_pool_backward,
    global_max_pool_forward,
)

__all__ = [
    "broadcast_add_backward",
    "broadcast_add_forward",
    "broadcast_multiply_backward",
    "broadcast_multiply_forward",
    "channel_avg_pool_backward",
    "channel_avg_pool_forward",
    "channel_max_pool_backward",
    "channel_max_pool_forward",
    "col2im",
    "concat_backward",
    "concat_forward",
    "conv1d_channels_backward",
    "conv1d_channels_forward",
    "conv2d_backward",
    "conv2d_forward",
    "gate_backward",
    "gate_forward",
    "global_avg_pool_backward",
    "global_avg_pool_forward",
    "global_max_pool_backward",
    "global_max_pool_forward",
    "im2col",
    "linear_backward",
    "linear_forward",
    "relu_backward",
    "relu_forward",
    "shared_mlp_backward",
    "shared_mlp_forward",
    "sigmoid_backward",
    "sigmoid_forward",
]
