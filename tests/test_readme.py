"""The README's Python examples run as written (on the MNIST of the test data home)."""

import re
from pathlib import Path

from hw1sk.datasets import DATA_HOME_ENV

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(mnist_data_home, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 2
    monkeypatch.setenv(DATA_HOME_ENV, mnist_data_home)
    namespace = {}
    for block in blocks:  # one namespace: later blocks use what earlier ones fitted
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["net"].history_.shape[0] == 5
    assert 0.0 < namespace["hessian_minimal_ratio"](
        namespace["reg"].module_, namespace["nn"].MSELoss(), namespace["Xf"],
        namespace["yf"]).ratio < 1.0
