"""What BAM's parity checks need to know about its state-dict keys (no torch needed)."""

from __future__ import annotations

# The biases of the layers just before a BatchNorm. In training mode BatchNorm subtracts the
# batch mean, which removes them: their gradient is zero in exact arithmetic and rounding
# noise in practice, so a relative error means nothing there.
BIASES_BEFORE_BATCHNORM = frozenset(
    {
        "channel_att.gate_c.gate_c_fc_0.bias",
        "spatial_att.gate_s.gate_s_conv_reduce0.bias",
        "spatial_att.gate_s.gate_s_conv_di_0.bias",
        "spatial_att.gate_s.gate_s_conv_di_1.bias",
    }
)


def zero_in_training(key: str, mode: str) -> bool:
    """Whether the result ``key`` (``grad/<param>``) is zero in exact arithmetic."""
    return mode == "train" and key.startswith("grad/") and key[5:] in BIASES_BEFORE_BATCHNORM


# Each of those biases and the BatchNorm right after its layer: that BatchNorm's bias gradient
# is the sum of the gradient reaching it, the size of the terms the removed bias's gradient
# sums to zero (up to the BatchNorm's scale).
NEXT_BATCHNORM = {
    "channel_att.gate_c.gate_c_fc_0.bias": "channel_att.gate_c.gate_c_bn_1.bias",
    "spatial_att.gate_s.gate_s_conv_reduce0.bias": "spatial_att.gate_s.gate_s_bn_reduce0.bias",
    "spatial_att.gate_s.gate_s_conv_di_0.bias": "spatial_att.gate_s.gate_s_bn_di_0.bias",
    "spatial_att.gate_s.gate_s_conv_di_1.bias": "spatial_att.gate_s.gate_s_bn_di_1.bias",
}


def scale_key(mode: str):
    """For :func:`parity.stored.errors_against`: the gradient of a bias removed by a
    training-mode BatchNorm is rounding noise of a sum that cancels; it is measured against the
    size of what it sums, estimated by the larger of its layer's weight gradient and the next
    BatchNorm's bias gradient (either alone can be tiny: the weight gradient where the
    receptive field sees mostly padding, as a dilated 3×3 kernel's centre tap alone on 1×1
    maps). Every other result by its own relative error."""

    def scale(key: str) -> tuple[str, str] | None:
        if zero_in_training(key, mode):
            bias = key[5:]
            return (
                "grad/" + bias.removesuffix(".bias") + ".weight",
                "grad/" + NEXT_BATCHNORM[bias],
            )
        return None

    return scale
