"""npcbam: CBAM (Convolutional Block Attention Module) in NumPy, with manual backprop.

Every forward and backward pass is written out in vectorized NumPy and checked against finite
differences and PyTorch. Start with :class:`CBAM` and :func:`check_gradients`.
"""

from npcbam.gradcheck import GradcheckReport, GradcheckRow, check_gradients, check_op_gradients
from npcbam.nn import CBAM, ChannelAttention, Module, SpatialAttention

__version__ = "0.1.0"

__all__ = [
    "CBAM",
    "ChannelAttention",
    "GradcheckReport",
    "GradcheckRow",
    "Module",
    "SpatialAttention",
    "check_gradients",
    "check_op_gradients",
]
