# make lab        set up .venv and open JupyterLab on notebooks/ (prints the URL)
# make test       set up, then run labkit's unit tests and every notebook (nbval, strict)
# make notebooks  re-run every notebook in record mode: fresh outputs + fresh data/ recordings
# make handout    write the student edition (solutions removed) to handout/

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# One xdist worker more than there are cores: the suite waits more than it computes (kernels
# starting, sockets, timeouts), so on 2 cores 3 workers take 42 s where 2 took 55 s.
PYTEST_ARGS ?= -n $(shell echo $$(( $$(nproc) + 1 ))) --dist loadscope
# Debian tools the tests compare against (tcpdump, tshark) and the browser tests/test_browser.py
# drives (chromium); installed when we are root, with an emoji font for the checks' ✅/❌ in
# its screenshots. One apt-get update and install: about 50 s, most of it chromium.
SYSTEM_TOOLS := tcpdump tshark chromium

.PHONY: lab test lint notebooks handout system-tools doctor clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/python -m labkit kernel install   # "Python 3 (netlab)": every notebook's kernel
	touch $(STAMP)

system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing fonts-noto-color-emoji >/dev/null; \
	else \
	  echo "note: missing$$missing (sudo apt-get install$$missing); tests that compare against them will skip"; \
	fi

lab: $(STAMP)
	$(BIN)/python -m labkit doctor
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --ServerApp.root_dir=notebooks \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

test: $(STAMP) system-tools
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check labkit tests benchmarks
	$(BIN)/mypy

notebooks: $(STAMP)
	$(BIN)/python -m labkit record

handout: $(STAMP)
	$(BIN)/python -m labkit handout handout

doctor: $(STAMP)
	$(BIN)/python -m labkit doctor

clean:
	rm -rf $(VENV) handout
