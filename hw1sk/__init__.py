"""hw1sk: scikit-learn-style estimators and studies for the Deep Learning HW1 experiments.

Public names are imported lazily, so ``import hw1sk`` stays fast and a user
who only needs the data loaders never pays for matplotlib.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # models
    "MLP": "models",
    "CNN": "models",
    "RowRNN": "models",
    "mlp_for_budget": "models",
    "cnn_for_budget": "models",
    "make_module": "models",
    "count_params": "parameters",
    # parameters
    "flatten_parameters": "parameters",
    "assign_flat_parameters": "parameters",
    # seeding
    "spawn_seeds": "seeding",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
