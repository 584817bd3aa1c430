"""The HW1 experiments as scikit-learn-style meta-estimators, one module per part."""

from .._lazy import attach

# public name -> module of this package that defines it
_EXPORTS = {}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
