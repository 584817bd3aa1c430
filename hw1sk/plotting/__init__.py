"""One function per figure: a fitted study or a DataFrame in, a matplotlib Figure out.

Plotting never trains and never writes files.
"""

from .._lazy import attach

# public name -> module of this package that defines it
_EXPORTS = {}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
