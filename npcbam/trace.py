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


def memory_needed(
    shape: tuple[int, int, int, int], reduction: int, kernel_size: int, dtype: np.dtype
) -> int:
    """An estimate, in bytes, of the memory one :func:`trace` of an (N, C, H, W) input needs,
    the module's weights and the standard normal draw included.

    From ``tracemalloc`` measurements: the draw (float64), about five arrays the size of x in
    ``dtype`` (intermediates and caches), and the spatial convolution's unfolded input
    (2·k·k values per pixel), which dominates for few channels; 1 % is added for the small
    arrays. The measured peaks were 0.5 to 1.0 times the estimate.
    """
    n, c, h, w = (int(size) for size in shape)  # Python ints: no overflow, however large
    itemsize = np.dtype(dtype).itemsize
    weights = 8 * (2 * c * (c // reduction) + 2 * kernel_size * kernel_size)  # float64
    unfolded = 2 * kernel_size * kernel_size * n * h * w
    return int(1.01 * (weights + n * c * h * w * (8 + 5 * itemsize) + unfolded * itemsize))


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
