"""HW1-3 generalization: random labels, parameters vs generalization, interpolation, sensitivity and sharpness.

Run it (an interrupted run resumes from .sweep_cache, redoing only unfinished runs)::

    python studies/hw1_3_generalization.py --profile full --n-jobs 2
    python studies/hw1_3_generalization.py --profile full --backend dask                      # LocalCluster
    python studies/hw1_3_generalization.py --profile full --backend dask --scheduler tcp://HOST:8786

Edit OVERRIDES to change a study's parameters on top of the profile, e.g.
{"1-3-...": {"n_runs": 200}}; `hw1sk list` names the experiments.
"""

import sys

from hw1sk.cli import sweep_main

OVERRIDES = {}

if __name__ == "__main__":
    sys.exit(sweep_main("1-3", OVERRIDES, description=__doc__.splitlines()[0]))
