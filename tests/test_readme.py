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


def test_the_two_commands_are_make_targets_and_ci_runs_the_test_one():
    import shutil
    import subprocess

    root = README.parent
    text = README.read_text(encoding="utf-8")
    commands = re.findall(r"^make (\w+)\s", text, re.M)
    assert commands[:2] == ["report", "test"]
    assert "make test" in (root / ".ci" / "run").read_text(encoding="utf-8")
    if shutil.which("make"):
        for target in commands[:2]:  # a dry run: the rules exist and resolve
            out = subprocess.run(["make", "-n", target], cwd=root, capture_output=True,
                                 text=True, check=True).stdout
            assert ("hw1sk report" if target == "report" else "-m pytest") in out
