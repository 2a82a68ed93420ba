"""``npcbam trace``: run CBAM once and show every intermediate of the seed's pipeline."""

from __future__ import annotations

import numpy as np

from npcbam.nn import CBAM

# What each step of CBAM.intermediates() is, in the words of the paper's equations.
DESCRIPTIONS = {
    "input": "F",
    "channel.avg_pooled": "AvgPool(F) over H x W",
    "channel.max_pooled": "MaxPool(F) over H x W",
    "channel.hidden_avg": "relu(W0 AvgPool(F)), shared MLP hidden layer",
    "channel.hidden_max": "relu(W0 MaxPool(F)), shared MLP hidden layer",
    "channel.logits": "MLP(avg) + MLP(max)",
    "channel.channel_map": "M_c = sigmoid(logits)",
    "channel.output": "F' = M_c * F, the channel-gated map",
    "spatial.max_over_channels": "max over channels of F'",
    "spatial.mean_over_channels": "mean over channels of F'",
    "spatial.conv_output": "k x k conv of [max; mean]",
    "spatial.spatial_map": "M_s = sigmoid(conv output)",
    "spatial.output": "F'' = M_s * F', the CBAM output",
}


def trace(module: CBAM, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``module.forward(x)`` and return its intermediates in pipeline order."""
    module.forward(x)
    return module.intermediates()


def format_trace(steps: dict[str, np.ndarray]) -> str:
    """One line per step: name, shape, dtype, min / mean / max / std, and what it is."""
    header = (
        f"{'step':<28} {'shape':<16} {'dtype':<8} {'min':>9} {'mean':>9} {'max':>9} "
        f"{'std':>9}  meaning"
    )
    lines = [header, "-" * len(header)]
    for name, value in steps.items():
        lines.append(
            f"{name:<28} {str(value.shape).replace(' ', ''):<16} {value.dtype!s:<8} "
            f"{value.min():>9.4f} {value.mean():>9.4f} {value.max():>9.4f} {value.std():>9.4f}"
            f"  {DESCRIPTIONS.get(name, '')}"
        )
    return "\n".join(lines)
