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


def scale_key(mode: str):
    """For :func:`parity.stored.errors_against`: the gradient of a bias removed by a
    training-mode BatchNorm is measured against its layer's weight gradient (the largest
    difference divided by that gradient's largest magnitude); every other result by its own
    relative error."""

    def scale(key: str) -> str | None:
        if zero_in_training(key, mode):
            return key.removesuffix(".bias") + ".weight"
        return None

    return scale
