#!/usr/bin/env bash
# The GPU checks of the device="cuda" paths, prepared as one command for a machine with a GPU.
#
#   bash benchmarks/device_check.sh fetch   # here, with the package registry: the wheels the
#                                           # GPU image lacks (skorch) into .whl/ (git-ignored)
#   bash benchmarks/device_check.sh run     # there, with .whl carried along: install them into
#                                           # /tmp/site, then the device tests and a benchmark
#
# "run" executes tests/test_devices.py (estimators, SeedEnsemble, a study, the minimal-ratio
# study, curvature and sensitivity, each on cuda against the CPU) and the functional
# optimizers' tests (each on cuda too), then `bench_seed_ensemble.py --quick --cases func` on
# cuda. Logs go to $OUT (else /tmp/device_check). About 2 minutes on a warm H200. Without a
# GPU, the cuda tests are skipped, and the benchmark runs on the CPU.
# PYTHON (default python3) is the interpreter that holds torch.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=.whl
case "${1:-run}" in
fetch)
    mkdir -p "$WHEELS"
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_17_x86_64 -d "$WHEELS" "skorch==1.4.0"
    ls -l "$WHEELS"
    ;;
run)
    out=${OUT:-/tmp/device_check}
    mkdir -p "$out"
    if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
        export PYTHONPATH=/tmp/site:$PWD
    else
        export PYTHONPATH=$PWD
    fi
    export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
    status=0
    (nvidia-smi -L 2>&1 || true) | tee "$out/gpu.txt"
    "$PYTHON" -c "import torch, hw1sk; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" \
        2>&1 | tee -a "$out/gpu.txt" || exit 1
    "$PYTHON" -m pytest tests/test_devices.py tests/test_functional_optim.py -q -ra \
        -p no:cacheprovider -o addopts="" 2>&1 | tee "$out/tests.log" || status=1
    device=$("$PYTHON" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
    "$PYTHON" benchmarks/bench_seed_ensemble.py --quick --cases func --depths 1,4 \
        --device "$device" 2>&1 | tee "$out/bench.log" || status=1
    exit $status
    ;;
*)
    echo "usage: bash benchmarks/device_check.sh [fetch|run]" >&2
    exit 2
    ;;
esac
