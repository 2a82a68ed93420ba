"""npcbam: CBAM (Convolutional Block Attention Module) in NumPy, with manual backprop.

Every forward and backward pass is written out in vectorized NumPy and checked against finite
differences and PyTorch. Start with :class:`CBAM` and :func:`check_gradients`.
"""

from npcbam.gradcam import attention_figure, grad_cam
from npcbam.gradcheck import GradcheckReport, GradcheckRow, check_gradients, check_op_gradients
from npcbam.nn import (
    BAM,
    CBAM,
    ECA,
    SE,
    AttentionClassifier,
    BatchNorm1d,
    BatchNorm2d,
    ChannelAttention,
    Conv2d,
    ConvCBAM,
    ConvTranspose2d,
    Linear,
    Module,
    OfficialCBAM,
    ReLU,
    ResidualBlockCBAM,
    ResnetFPN4CBAM,
    Sequential,
    SpatialAttention,
)

__version__ = "0.1.0"

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
    "GradcheckReport",
    "GradcheckRow",
    "Linear",
    "Module",
    "OfficialCBAM",
    "ReLU",
    "ResidualBlockCBAM",
    "ResnetFPN4CBAM",
    "Sequential",
    "SpatialAttention",
    "attention_figure",
    "check_gradients",
    "check_op_gradients",
    "grad_cam",
]
