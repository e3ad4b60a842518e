# make lab        set up .venv and open JupyterLab on the student edition, handout/ (prints the URL)
# make lab-instructor   the same on notebooks/: the teacher's edition, with every solution
# make test       set up, then run labkit's unit tests and every notebook (nbval, strict)
# make notebooks  re-run every notebook in record mode: fresh outputs + fresh data/ recordings
# make handout    write the student edition (solutions removed) to handout/, even if it is fresh
# make slides     write every lesson's reveal.js deck to slides/ (works offline: open slides/NN-*.slides.html)

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# One xdist worker more than there are cores: the suite waits more than it computes (kernels
# starting, sockets, timeouts), so on 2 cores 3 workers take 42 s where 2 took 55 s.
PYTEST_ARGS ?= -n $(shell echo $$(( $$(nproc) + 1 ))) --dist loadscope
# Debian packages: the tools the tests compare against (tcpdump, tshark; dig, from
# bind9-dnsutils, a resolver that checks DNSServer), iproute2's `ip` that builds the lab
# hosts, nftables' `nft` for their NAT and firewall rules (notebook 10; a lesson writes
# nft's own rules, so it is nft itself: binder/apt.txt lists the same), and the browser
# tests/test_browser.py drives (chromium, with an emoji font for the text-form ✅/❌ in its
# screenshots). Installed when we are root: one apt-get, about 50 s, most of it chromium.
SYSTEM_TOOLS := tcpdump tshark iproute2 nftables bind9-dnsutils
BROWSER := chromium

.PHONY: lab lab-instructor test lint notebooks handout slides system-tools doctor clean

# pip's own output and progress bars, not --quiet: the first install takes minutes, and a
# set-up that says nothing for minutes looks hung.
$(STAMP): requirements.txt pyproject.toml
	@echo "==> [1/3] creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] installing requirements.txt (the first time takes a few minutes)"
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements.txt
	@echo "==> [3/3] installing the lab kernel, Python 3 (netlab)"
	$(BIN)/python -m labkit kernel install   # every notebook's kernel
	touch $(STAMP)
	@echo "==> set up: $(VENV) is ready"

system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS) $(BROWSER); do dpkg-query -W -f='$${Status}' $$t 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing fonts-noto-color-emoji >/dev/null; \
	else \
	  echo "note: missing$$missing (sudo apt-get install$$missing); tests that compare against them will skip"; \
	fi

# The student edition is rebuilt when a notebook or the tool that strips them is newer.
LESSONS := $(wildcard notebooks/[0-9][0-9]-*.ipynb)
HANDOUT := handout/.built

$(HANDOUT): $(STAMP) $(LESSONS) labkit/tools/handout.py labkit/tools/exercises.py
	$(BIN)/python -m labkit handout handout   # also writes $(HANDOUT)

# Students: the lessons without their solutions.
lab: $(HANDOUT)
	$(BIN)/python -m labkit doctor
	@$(BIN)/python -m labkit lab handout   # JupyterLab, announced by one line: open: <URL>

# Instructors: the lessons with every solution and its ✅.
lab-instructor: $(STAMP)
	$(BIN)/python -m labkit doctor
	@$(BIN)/python -m labkit lab notebooks   # JupyterLab, announced by one line: open: <URL>

test: $(STAMP) system-tools
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check labkit tests benchmarks
	$(BIN)/mypy

notebooks: $(STAMP)
	$(BIN)/python -m labkit record

handout: $(STAMP)
	$(BIN)/python -m labkit handout handout

# Static decks with reveal.js copied beside them: no CDN, so they work offline and the folder
# can be copied to the presenting machine as it is.
slides: $(STAMP)
	$(BIN)/python -m labkit slides slides

doctor: $(STAMP)
	$(BIN)/python -m labkit doctor

clean:
	rm -rf $(VENV) handout slides
