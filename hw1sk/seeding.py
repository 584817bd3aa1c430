"""The one place where ``random_state`` becomes torch and numpy seeds."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils import check_random_state

_MAX_SEED = 2**31 - 1


def as_seed(random_state) -> int:
    """Turn an sklearn-style ``random_state`` into a plain integer seed.

    Parameters
    ----------
    random_state : int, numpy.random.RandomState, numpy.random.Generator or None
        ``None`` draws a fresh seed from numpy's global state (not reproducible),
        an int is returned unchanged (after a range check), a ``RandomState`` is
        consumed once.

    Returns
    -------
    seed : int
        A seed in ``[0, 2**31 - 1)``.
    """
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        seed = int(random_state)
        if not 0 <= seed <= _MAX_SEED:
            raise ValueError(
                f"random_state must be in [0, {_MAX_SEED}], got {random_state!r}."
            )
        return seed
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(_MAX_SEED))
    return int(check_random_state(random_state).randint(_MAX_SEED))


def spawn_seeds(random_state, n: int) -> list[int]:
    """Derive ``n`` independent integer seeds from one ``random_state``.

    The same ``random_state`` always yields the same list, so the runs of a
    study are reproducible one by one, whatever the order they execute in.

    Parameters
    ----------
    random_state : int, RandomState or None
        Master seed.
    n : int
        Number of seeds.

    Returns
    -------
    seeds : list of int
    """
    ss = np.random.SeedSequence(as_seed(random_state))
    return [int(s.generate_state(1)[0] % _MAX_SEED) for s in ss.spawn(n)]


def torch_generator(random_state, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded from ``random_state``.

    Parameters
    ----------
    random_state : int, RandomState or None
    device : str or torch.device, default="cpu"

    Returns
    -------
    generator : torch.Generator
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(as_seed(random_state))
    return gen


def seed_everything(random_state) -> int:
    """Seed torch's global generator (CPU and CUDA) from ``random_state``.

    Module initialisation in torch reads the global generator, so this is
    called right before a module is built.

    Parameters
    ----------
    random_state : int, RandomState or None

    Returns
    -------
    seed : int
        The seed that was used.
    """
    seed = as_seed(random_state)
    torch.manual_seed(seed)
    return seed
