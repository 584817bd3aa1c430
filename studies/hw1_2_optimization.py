"""HW1-2 optimization: weight trajectories (joint PCA), gradient norm, minimal ratio at near-zero gradient (100 runs), error surface.

Run it (an interrupted run resumes from .sweep_cache, redoing only unfinished runs)::

    python studies/hw1_2_optimization.py --profile full --n-jobs 2
    python studies/hw1_2_optimization.py --profile full --backend dask                      # LocalCluster
    python studies/hw1_2_optimization.py --profile full --backend dask --scheduler tcp://HOST:8786

Edit OVERRIDES to change a study's parameters on top of the profile, e.g.
{"1-2-...": {"n_runs": 200}}; `hw1sk list` names the experiments.
"""

import sys

from hw1sk.cli import sweep_main

OVERRIDES = {}

if __name__ == "__main__":
    sys.exit(sweep_main("1-2", OVERRIDES, description=__doc__.splitlines()[0]))
