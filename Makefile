# The two commands of the README: `make report` (the main job) and `make test` (the suite).
# Both create the virtual environment on first use (.ci/install), and again when
# pyproject.toml changes.
VENV ?= .venv
PROFILE ?= quick
OUT ?= hw1sk_output
ARGS ?=

$(VENV)/.installed: pyproject.toml .ci/install
	HW1SK_VENV=$(abspath $(VENV)) bash .ci/install
	touch $@

.PHONY: env report test docs
env: $(VENV)/.installed

report: env
	$(VENV)/bin/hw1sk report --profile $(PROFILE) --out $(OUT) $(ARGS)

test: env
	$(VENV)/bin/python -m pytest $(ARGS)

docs: env
	$(VENV)/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
