# The two commands of the README. Both set up .venv/ first when needed (scripts/setup.sh).
.PHONY: demo test setup

setup:
	@bash scripts/setup.sh

demo: setup  ## the embedded default: the whole loop on CPU, offline (12 to 18 min on 2 cores)
	.venv/bin/openvlt run recipes/tiny-cpu.yaml

test: setup  ## the test suite (CPU, offline)
	.venv/bin/python -m pytest
