# One-command set-up for the series. Every target creates .venv when it is missing and
# installs what it needs (torch pinned: an unpinned torch pulls gigabytes of CUDA packages).
#
#   make lab          open the notebooks in JupyterLab
#   make notebooks    run every notebook headless through papermill (full mode, in place)
#   make notebooks QUICK=1   the same in quick mode, executed copies written to outputs/
#   make site         the website of the series in build/site/ (committed outputs and fits, nothing
#                     trained; rebuilt when its inputs change; MathJax from npm, pinned in package.json)
#   make test         unit tests, the website built and link-checked, every notebook under nbval in
#                     quick mode, then the browser tests (what CI runs)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
TORCH_PIN := torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
QUICK ?=

.PHONY: setup lab notebooks site site-check test unit-tests notebook-tests e2e-tests bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]" "$(TORCH_PIN)"
	@touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

notebooks: $(STAMP)
ifeq ($(QUICK),)
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb (full mode)"; start=$$(date +%s); \
	  ( cd notebooks && ../$(VENV)/bin/papermill --execution-timeout 1800 --cwd . "$$(basename $$nb)" "$$(basename $$nb)" ) || exit 1; \
	  echo "== $$nb: full mode, $$(( $$(date +%s) - start )) s (load: $$(cut -d' ' -f1-3 /proc/loadavg))"; \
	done
else
	@mkdir -p outputs
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb (quick mode) -> outputs/"; \
	  start=$$(date +%s); \
	  NF_QUICK=1 $(VENV)/bin/papermill --execution-timeout 600 --cwd notebooks "$$nb" "outputs/$$(basename $$nb)" || exit 1; \
	  echo "== $$nb: quick mode, $$(( $$(date +%s) - start )) s"; \
	done
endif

# The website (MkDocs + mkdocs-jupyter, offline): build/site/index.html, with the sliders' frames
# drawn from the committed fits. `npm ci` installs the MathJax that package-lock.json pins (the
# site serves it from its own assets). site-check checks every internal link, anchor and image of
# the built pages, and that no page asks another host for anything.
NODE_STAMP := node_modules/.package-lock.json
SITE_INPUTS := $(NOTEBOOKS) mkdocs.yml pyproject.toml $(wildcard docs/*.md docs/assets/* docs/assets/*/* \
	tools/*.py nfutils/*.py nfutils/*/*.py data/checkpoints/*.pt data/results/*)

$(NODE_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund

build/site/index.html: $(STAMP) $(NODE_STAMP) $(SITE_INPUTS)
	$(PY) tools/build_site.py

site: build/site/index.html

site-check: site
	$(PY) tools/check_site.py

unit-tests: $(STAMP)
	NF_QUICK=1 $(PY) -m pytest tests -m "not browser and not colab and not scripts"

notebook-tests: $(STAMP)
	NF_QUICK=1 MPLBACKEND=Agg $(PY) -m pytest --nbval-lax notebooks/

# Used as people use it: the scripts end to end, notebook 01 on a simulated Colab (fresh venv), 01 + 02 in
# JupyterLab driven by Debian's Chromium (.ci/run installs it), and each part's web page in the
# same browser with no other host reachable, its sliders moved. Screenshots: .artifacts/screenshots/
e2e-tests: site
	NF_QUICK=1 $(PY) -m pytest tests -m "browser or colab or scripts"

test: unit-tests site-check notebook-tests e2e-tests

# Speed of a Part 1 training step against normflows, and of a VAE step (README
# "Performance"). Installs the optional extra with normflows, torch kept at the pin.
# The outputs replace benchmarks/results/*_cpu.md, which the README's tables come from.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]" "$(TORCH_PIN)"
	$(PY) -m benchmarks.flows | tee benchmarks/results/flows_cpu.md
	$(PY) -m benchmarks.vae --threads 1 2 --steps 60 --warmup 10 --is-examples 10 \
	  | tee benchmarks/results/vae_cpu.md

clean-venv:
	rm -rf $(VENV)
