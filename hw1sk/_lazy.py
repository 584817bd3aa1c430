"""Lazy attribute loading for packages (the pattern of SPEC 1 / ``lazy_loader``)."""

from importlib import import_module


def attach(package, exports):
    """Make ``package`` load each public name from its module on first access.

    Parameters
    ----------
    package : str
        ``__name__`` of the package.
    exports : dict of str to str
        Public name -> submodule (relative to ``package``) that defines it.

    Returns
    -------
    __getattr__, __dir__, __all__
        To assign in the package's namespace.
    """
    exports = dict(exports)
    cache = {}

    def __getattr__(name):
        if name in exports:
            if name not in cache:
                cache[name] = getattr(import_module(f".{exports[name]}", package), name)
            return cache[name]
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
