"""Write the optimizer parity fixtures of ``tests/test_optim.py`` (needs torch).

Run ``python tests/parity/make_optim_fixtures.py`` from any directory: it replaces every
``.npz`` in ``tests/parity/fixtures/optim/`` with fresh ones. One fixture per optimizer
configuration holds

- the configuration: ``optimizer`` (``"SGD"`` or ``"Adam"``) and its hyperparameters as 0-d
  arrays (``lr``, ``momentum``, ``dampening``, ``weight_decay``, ``nesterov`` for SGD; ``lr``,
  ``beta1``, ``beta2``, ``eps``, ``weight_decay``, ``amsgrad`` for Adam), ``steps``,
  ``torch_version`` and ``torch_path`` (the update path PyTorch took);
- ``param/<name>``: the starting values of four parameters of different shapes (a 0-d one, a
  vector and two shaped as CBAM's weights), seeded float64;
- ``grad/<name>``, shape (steps, *shape): the gradient given at each step, seeded normal values
  times a per-step scale that first grows and then shrinks (so that AMSGrad's running maximum
  differs from the current second moment), with some exact zeros;
- ``expected/<name>``, shape (steps, *shape): PyTorch's parameter after each step;
- for Adam, ``bias_corrections``, shape (steps, 2): ``1 - beta1 ** t`` and
  ``(1 - beta2 ** t) ** 0.5`` as PyTorch's Python code computed them with this platform's
  ``pow`` (a test reading the fixture elsewhere can tell whether its ``pow`` rounds the same).

PyTorch runs with ``foreach=False``, its single-tensor path (``_single_tensor_sgd``,
``_single_tensor_adam``); for CPU tensors this is also its default (``foreach=None``), which
the script checks gives identical bits. The archives carry no timestamps, so a rerun with the
same PyTorch (on a machine whose float64 kernels round the same) writes identical bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from fixture_io import replace_fixtures  # the script's folder is on sys.path when it runs

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "optim"
STEPS = 8
# per-step gradient scales: a large gradient, then smaller ones (AMSGrad keeps the maximum)
GRAD_SCALES = (1.0, 4.0, 0.5, 0.1, 1.0, 0.03, 2.0, 0.2)
SHAPES = {
    "gain": (),
    "bias": (5,),
    "mlp.0.weight": (2, 8, 1, 1),
    "conv.weight": (1, 2, 3, 3),
}
SGD_DEFAULTS = {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}
ADAM_DEFAULTS = {
    "lr": 1e-3,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "amsgrad": False,
}
# (name, optimizer, hyperparameters other than the defaults, seed)
CONFIGS = [
    ("sgd_plain", "SGD", {"lr": 0.1}, 101),
    ("sgd_momentum", "SGD", {"lr": 0.05, "momentum": 0.9}, 102),
    ("sgd_momentum_dampening", "SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}, 103),
    ("sgd_nesterov", "SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True}, 104),
    ("sgd_weight_decay", "SGD", {"lr": 0.1, "weight_decay": 0.05}, 105),
    (
        "sgd_nesterov_weight_decay",
        "SGD",
        {"lr": 0.02, "momentum": 0.95, "nesterov": True, "weight_decay": 0.01},
        106,
    ),
    ("adam_default", "Adam", {}, 201),
    ("adam_weight_decay", "Adam", {"lr": 0.01, "weight_decay": 0.1}, 202),
    ("adam_amsgrad", "Adam", {"lr": 0.01, "amsgrad": True}, 203),
    # 1 - beta1 >= 0.5: lerp's other branch; a large eps that matters
    ("adam_unusual_betas", "Adam", {"lr": 0.05, "beta1": 0.3, "beta2": 0.5, "eps": 1e-3}, 204),
    (
        "adam_beta1_zero_amsgrad_weight_decay",
        "Adam",
        {"lr": 0.02, "beta1": 0.0, "beta2": 0.9, "weight_decay": 0.01, "amsgrad": True},
        205,
    ),
]


def draw_problem(seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Starting parameters and the (steps, *shape) gradients of every parameter."""
    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}
    grads = {}
    for name, shape in SHAPES.items():
        g = rng.standard_normal((STEPS, *shape)) * np.reshape(
            GRAD_SCALES, (-1,) + (1,) * len(shape)
        )
        if g.ndim > 1:
            g[2, ..., 0] = 0.0  # exact zeros: no update from the gradient itself at step 3
        grads[name] = g
    return params, grads


def torch_optimizer(kind: str, config: dict, tensors: list[torch.Tensor], foreach):
    if kind == "SGD":
        return torch.optim.SGD(
            tensors,
            lr=config["lr"],
            momentum=config["momentum"],
            dampening=config["dampening"],
            weight_decay=config["weight_decay"],
            nesterov=config["nesterov"],
            foreach=foreach,
        )
    return torch.optim.Adam(
        tensors,
        lr=config["lr"],
        betas=(config["beta1"], config["beta2"]),
        eps=config["eps"],
        weight_decay=config["weight_decay"],
        amsgrad=config["amsgrad"],
        foreach=foreach,
    )


def torch_trajectory(kind, config, params, grads, foreach) -> dict[str, np.ndarray]:
    """PyTorch's parameters after each step, (steps, *shape) per name."""
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    optimizer = torch_optimizer(kind, config, list(tensors.values()), foreach)
    trajectory = {name: [] for name in params}
    for step in range(STEPS):
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name][step])
        optimizer.step()
        for name, tensor in tensors.items():
            trajectory[name].append(tensor.detach().numpy().copy())
    return {name: np.stack(values) for name, values in trajectory.items()}


def make_fixture(name: str, kind: str, overrides: dict, seed: int) -> dict[str, np.ndarray]:
    config = {**(SGD_DEFAULTS if kind == "SGD" else ADAM_DEFAULTS), **overrides}
    params, grads = draw_problem(seed)
    expected = torch_trajectory(kind, config, params, grads, foreach=False)
    default = torch_trajectory(kind, config, params, grads, foreach=None)
    for key, values in expected.items():
        if not np.array_equal(values, default[key]):
            raise RuntimeError(f"{name}: torch's default path differs from foreach=False")
        if values.dtype != np.float64 or np.array_equal(values[-1], params[key]):
            raise RuntimeError(f"{name}: {key} did not move or is mistyped")
    arrays = {
        "optimizer": np.array(kind),
        **{key: np.array(value) for key, value in config.items()},
        "steps": np.array(STEPS),
        "torch_version": np.array(str(torch.__version__)),  # 0-d fixed-width str_, no pickle
        "torch_path": np.array(f"torch.optim.{kind}(foreach=False): _single_tensor_{kind.lower()}"),
    }
    if kind == "Adam":
        arrays["bias_corrections"] = np.array(
            [
                (1 - config["beta1"] ** float(t), (1 - config["beta2"] ** float(t)) ** 0.5)
                for t in range(1, STEPS + 1)
            ]
        )
    arrays.update({f"param/{key}": value for key, value in params.items()})
    arrays.update({f"grad/{key}": value for key, value in grads.items()})
    arrays.update({f"expected/{key}": value for key, value in expected.items()})
    return arrays


def main() -> None:
    """Regenerate every optimizer fixture and print their names and sizes."""
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)  # the step counter's dtype follows the default
    # compute everything first: a failed check leaves the existing fixtures untouched
    fixtures = {f"{name}.npz": make_fixture(name, *rest) for name, *rest in CONFIGS}
    replace_fixtures(FIXTURE_DIR, fixtures, torch.__version__)


if __name__ == "__main__":
    main()
