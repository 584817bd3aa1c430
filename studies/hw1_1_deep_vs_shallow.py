"""HW1-1 deep vs shallow: parameter-matched MLPs on 1-D functions; shallow/deep CNNs and DNNs on MNIST.

Run it (an interrupted run resumes from .sweep_cache, redoing only unfinished runs)::

    python studies/hw1_1_deep_vs_shallow.py --profile full --n-jobs 2
    python studies/hw1_1_deep_vs_shallow.py --profile full --backend dask                      # LocalCluster
    python studies/hw1_1_deep_vs_shallow.py --profile full --backend dask --scheduler tcp://HOST:8786

Edit OVERRIDES to change a study's parameters on top of the profile, e.g.
{"1-1-...": {"n_runs": 200}}; `hw1sk list` names the experiments.
"""

import sys

from hw1sk.cli import sweep_main

OVERRIDES = {}

if __name__ == "__main__":
    sys.exit(sweep_main("1-1", OVERRIDES, description=__doc__.splitlines()[0]))
