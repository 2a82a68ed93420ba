"""Exercises of reading notebook 3: how pooling routes the gradient, and the tie rule.

The wrong ops defined here (an average pool's backward without its 1/(H·W), ...) are also
planted into the attention modules by :mod:`npcbam.exercises.catalogue.attention`.
"""

from __future__ import annotations

import numpy as np

from npcbam.exercises.catalogue.cases import (
    draw_until,
    shape_label,
    top2_gap,
    upstream,
    values,
    with_ties,
)
from npcbam.exercises.registry import Case, Exercise, Misconception, Part
from npcbam.ops.pooling import (
    add_broadcast,
    channel_avg_pool_backward,
    channel_avg_pool_forward,
    channel_max_pool_backward,
    channel_max_pool_forward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    global_max_pool_backward,
    global_max_pool_forward,
)

# -- references: npcbam's ops, on a cache made by their forward --------------------------------


def global_avg_pool_reference(da, x):
    _, cache = global_avg_pool_forward(x)
    return global_avg_pool_backward(da, cache)


def global_max_pool_reference(dm, x):
    _, cache = global_max_pool_forward(x)
    return global_max_pool_backward(dm, cache)


def channel_avg_pool_reference(ds, x):
    _, cache = channel_avg_pool_forward(x)
    return channel_avg_pool_backward(ds, cache)


def channel_max_pool_reference(ds, x):
    _, cache = channel_max_pool_forward(x)
    return channel_max_pool_backward(ds, cache)


# -- wrong ops, with the ops' own signature (planted into the modules too) ---------------------


def global_avg_backward_without_scale(dout, cache, add_to=None):
    """x̄ = ā broadcast over H×W, without the 1/(H·W)."""
    return add_broadcast(dout[:, :, None, None], cache.x_shape, add_to)


def channel_avg_backward_by_hw(dout, cache, add_to=None):
    """x̄ = s̄ / (H·W): the channel mean's gradient divided by the wrong count."""
    _, _, h, w = cache.x_shape
    return add_broadcast(dout / (h * w), cache.x_shape, add_to)


def channel_avg_backward_without_scale(dout, cache, add_to=None):
    """x̄ = s̄ broadcast over the channels, without the 1/C."""
    return add_broadcast(dout, cache.x_shape, add_to)


def skipped_backward(dout, cache, add_to=None):
    """This use of x contributes nothing to x̄ (the term is missing from the sum)."""
    return np.zeros(cache.x_shape, dtype=dout.dtype) if add_to is None else add_to


# -- wrong tie rules (they need x itself, so they are written with the exercise's signature) --


def _max_mask(x, axes):
    return x == x.max(axis=axes, keepdims=True)


def to_every_tied_entry(dout_full, x, axes):
    return _max_mask(x, axes) * dout_full


def split_between_ties(dout_full, x, axes):
    mask = _max_mask(x, axes)
    return mask * dout_full / mask.sum(axis=axes, keepdims=True)


def to_last_tied_entry(dout_full, x, axes):
    # the first maximum of the array read backwards along the pooled axes is the last one
    flipped = np.flip(x, axis=axes)
    mask = np.flip(_first_max_mask(flipped, axes), axis=axes)
    return mask * dout_full


def _first_max_mask(x, axes):
    mask = _max_mask(x, axes)
    moved = np.moveaxis(mask, axes, tuple(range(-len(axes), 0)))
    flat = moved.reshape(*moved.shape[: -len(axes)], -1)  # (..., pooled) with ties
    first = np.zeros_like(flat)
    np.put_along_axis(first, flat.argmax(axis=-1)[..., None], True, axis=-1)
    return np.moveaxis(first.reshape(moved.shape), tuple(range(-len(axes), 0)), axes)


def tie_misconceptions(reference_name: str, full, axes, what: str):
    """The three wrong tie rules, and the gradient sent everywhere, for one max pooling."""
    return (
        Misconception(
            f"{reference_name}_to_every_tie",
            f"your x̄ sends the gradient to every tied maximum of {what}: a tie's gradient goes "
            f"to the first maximum only (torch.max(dim) does the same)",
            variant=lambda d, x: to_every_tied_entry(full(d), x, axes),
        ),
        Misconception(
            f"{reference_name}_to_last_tie",
            f"your x̄ sends a tie's gradient to the last maximum of {what}; the rule here is "
            f"the first (np.argmax returns the first)",
            variant=lambda d, x: to_last_tied_entry(full(d), x, axes),
        ),
        Misconception(
            f"{reference_name}_split_ties",
            f"your x̄ splits a tie's gradient evenly among the tied maxima of {what} "
            f"(torch.amax's convention); this exercise sends it all to the first maximum",
            variant=lambda d, x: split_between_ties(full(d), x, axes),
        ),
        Misconception(
            f"{reference_name}_to_every_entry",
            f"your x̄ sends the gradient to every entry of {what}, not only to the maximum: "
            f"max pooling routes it to the winner alone",
            variant=lambda d, x: np.broadcast_to(full(d), x.shape).copy(),
        ),
    )


# -- cases -------------------------------------------------------------------------------------


def _global_case(rng, n, c, h, w, ties=False):
    if ties:
        x = with_ties(rng, (n, c, h, w), (2, 3))
        label = f"{shape_label(N=n, C=c, H=h, W=w)}, a tie for the maximum of every channel"
    else:
        x = draw_until(rng, lambda r: values(r, (n, c, h, w)), lambda x: top2_gap(x, (2, 3)) > 1e-3)
        label = shape_label(N=n, C=c, H=h, W=w)
    return Case(label, (upstream(rng, (n, c)), x))


def _channel_case(rng, n, c, h, w, ties=False):
    if ties:
        x = with_ties(rng, (n, c, h, w), (1,))
        label = f"{shape_label(N=n, C=c, H=h, W=w)}, a tie for the maximum at every position"
    else:
        x = draw_until(rng, lambda r: values(r, (n, c, h, w)), lambda x: top2_gap(x, (1,)) > 1e-3)
        label = shape_label(N=n, C=c, H=h, W=w)
    return Case(label, (upstream(rng, (n, 1, h, w)), x))


def global_cases(rng, ties=False):
    cases = [
        _global_case(rng, 2, 3, 4, 5),
        _global_case(rng, 1, 2, 1, 1),  # H = W = 1: every pooling is the identity
        _global_case(rng, 3, 4, 2, 3),
    ]
    return [*cases, _global_case(rng, 2, 3, 3, 2, ties=True)] if ties else cases


def channel_cases(rng, ties=False):
    cases = [
        _channel_case(rng, 2, 3, 4, 5),
        _channel_case(rng, 1, 4, 1, 1),
        _channel_case(rng, 3, 5, 2, 2),
    ]
    return [*cases, _channel_case(rng, 2, 4, 2, 3, ties=True)] if ties else cases


def over_positions(dm):
    return dm[:, :, None, None]  # (N, C) -> (N, C, 1, 1)


def over_channels(ds):
    return ds  # (N, 1, H, W): broadcasts over C already


GLOBAL_AVG_MISSING_SCALE = Misconception(
    "global_avg_missing_scale",
    "your x̄ is the right one without the 1/(H·W) of the average pool",
    plants=lambda: {"global_avg_pool_backward": global_avg_backward_without_scale},
)
CHANNEL_AVG_BY_HW = Misconception(
    "channel_avg_divided_by_hw",
    "your x̄ divides the channel mean's gradient by H·W; the mean is over the C channels, so "
    "x̄ = s̄ / C",
    plants=lambda: {"channel_avg_pool_backward": channel_avg_backward_by_hw},
)
CHANNEL_AVG_MISSING_SCALE = Misconception(
    "channel_avg_missing_scale",
    "your x̄ is the right one without the 1/C of the mean over channels",
    plants=lambda: {"channel_avg_pool_backward": channel_avg_backward_without_scale},
)

POOLING_READING = "docs/theory/pooling.md"

GLOBAL_AVG_POOL = Exercise(
    name="global_avg_pool",
    title="Global average pooling backward",
    points=1,
    notebook="ex03_pooling",
    reading="03_pooling.ipynb §2",
    theory=POOLING_READING,
    parts=(
        Part(
            "global_avg_pool_backward",
            "global_avg_pool_backward(da, x) -> dx",
            (("dx", "x̄"),),
            global_avg_pool_reference,
            global_cases,
            (GLOBAL_AVG_MISSING_SCALE,),
        ),
    ),
)

GLOBAL_MAX_POOL = Exercise(
    name="global_max_pool",
    title="Global max pooling backward, with the tie rule",
    points=2,
    notebook="ex03_pooling",
    reading="03_pooling.ipynb §3 and §6",
    theory=POOLING_READING,
    parts=(
        Part(
            "global_max_pool_backward",
            "global_max_pool_backward(dm, x) -> dx",
            (("dx", "x̄"),),
            global_max_pool_reference,
            lambda rng: global_cases(rng, ties=True),
            tie_misconceptions("global_max", over_positions, (2, 3), "a channel's H×W map"),
        ),
    ),
)

CHANNEL_AVG_POOL = Exercise(
    name="channel_avg_pool",
    title="Mean over channels backward",
    points=1,
    notebook="ex03_pooling",
    reading="03_pooling.ipynb §2",
    theory=POOLING_READING,
    parts=(
        Part(
            "channel_avg_pool_backward",
            "channel_avg_pool_backward(ds, x) -> dx",
            (("dx", "x̄"),),
            channel_avg_pool_reference,
            channel_cases,
            (CHANNEL_AVG_BY_HW, CHANNEL_AVG_MISSING_SCALE),
        ),
    ),
)

CHANNEL_MAX_POOL = Exercise(
    name="channel_max_pool",
    title="Max over channels backward, with the tie rule",
    points=2,
    notebook="ex03_pooling",
    reading="03_pooling.ipynb §3 and §6",
    theory=POOLING_READING,
    parts=(
        Part(
            "channel_max_pool_backward",
            "channel_max_pool_backward(ds, x) -> dx",
            (("dx", "x̄"),),
            channel_max_pool_reference,
            lambda rng: channel_cases(rng, ties=True),
            tie_misconceptions("channel_max", over_channels, (1,), "the C channels at a position"),
        ),
    ),
)

EXERCISES = (GLOBAL_AVG_POOL, GLOBAL_MAX_POOL, CHANNEL_AVG_POOL, CHANNEL_MAX_POOL)
