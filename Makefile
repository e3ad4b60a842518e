# make lab        set up .venv and open JupyterLab on the student edition, handout/ (prints the URL)
# make lab-instructor   the same on notebooks/: the teacher's edition, with every solution
# make test       set up, then run labkit's unit tests and every notebook (nbval, strict)
# make notebooks  re-run every notebook in record mode: fresh outputs + fresh data/ recordings
# make handout    write the student edition (solutions removed) to handout/, even if it is fresh
# make slides     write every lesson's reveal.js deck to slides/ (works offline: open slides/NN-*.slides.html)

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# LAB: set up for the lessons (labkit, what it needs, the lab kernel); STAMP: and for the
# rest, tests, lint, slides, grading (pyproject.toml's extra `dev`)
LAB     := $(VENV)/.lab
STAMP   := $(VENV)/.installed
# One xdist worker more than there are cores: the suite waits more than it computes (kernels
# starting, sockets, timeouts), so on 2 cores 3 workers take 42 s where 2 took 55 s.
PYTEST_ARGS ?= -n $(shell echo $$(( $$(nproc) + 1 ))) --dist loadscope
# Debian packages: the tools the tests compare against (tcpdump, tshark; dig, from
# bind9-dnsutils, a resolver that checks DNSServer), iproute2's `ip` that builds the lab
# hosts, nftables' `nft` for their NAT and firewall rules (notebook 10; a lesson writes
# nft's own rules, so it is nft itself), curl (04 sets it beside Python; binder/apt.txt
# lists the same), and the browser
# tests/test_browser.py drives (chromium, with an emoji font for the text-form ✅/❌ in its
# screenshots). Installed when we are root: one apt-get, about 50 s, most of it chromium.
SYSTEM_TOOLS := tcpdump tshark iproute2 nftables bind9-dnsutils curl
BROWSER := chromium

.PHONY: lab lab-instructor test lint notebooks handout slides system-tools doctor clean hub

# pip's own output and progress bars, not --quiet: the first install takes minutes, and a
# set-up that says nothing for minutes looks hung. PIP_DISABLE_PIP_VERSION_CHECK: no "new
# version of pip" notice to ignore (the venv's pip is new enough).
export PIP_DISABLE_PIP_VERSION_CHECK := 1
$(LAB): requirements.txt pyproject.toml
	@echo "==> [1/3] creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] installing requirements.txt: what the lessons need (a minute or two)"
	$(BIN)/pip install -r requirements.txt
	@echo "==> [3/3] installing the lab kernel, Python 3 (netlab)"
	$(BIN)/python -m labkit kernel install   # every notebook's kernel
	touch $(LAB)
	@echo "==> set up: $(VENV) is ready for the lessons"

# Everything in one pip run (one resolution) when nothing is installed yet: CI's clean clone.
$(STAMP): requirements-dev.txt requirements.txt pyproject.toml
	@echo "==> installing requirements-dev.txt: the lessons, tests, lint, slides, grading"
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements-dev.txt
	$(BIN)/python -m labkit kernel install   # every notebook's kernel
	touch $(LAB) $(STAMP)

system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS) $(BROWSER); do dpkg-query -W -f='$${Status}' $$t 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing fonts-noto-color-emoji >/dev/null; \
	else \
	  echo "note: missing$$missing (sudo apt-get install$$missing); tests that compare against them will skip"; \
	fi

# A JupyterHub's shared environment, in this clone, for every user of the machine (as root:
# `sudo make hub`; docs/teaching.md, "A hub without containers"): .venv made with Debian's
# python3 (root's own may live where students cannot run it), labkit and what the lessons
# need, JupyterHub's single-user server, the lab kernel readable by all, the student edition
# in handout/; then it checks that another user (nobody) can start all of it.
# Into another environment (TLJH: HUB_ENV=/opt/tljh/user HUB_EXTRAS=, it has JupyterHub).
HUB_PYTHON ?= /usr/bin/python3
HUB_ENV    ?= $(VENV)
HUB_EXTRAS ?= hub
hub:
	@[ "$$(id -u)" = 0 ] || { echo "make hub: run it as root (sudo make hub): it installs for every user of this machine"; exit 1; }
	@$(MAKE) --no-print-directory system-tools SYSTEM_TOOLS="$(SYSTEM_TOOLS) python3-venv" BROWSER=
	umask 022; [ -x $(HUB_ENV)/bin/python ] || $(HUB_PYTHON) -m venv $(HUB_ENV)
	umask 022; $(HUB_ENV)/bin/pip install -e ".$(if $(HUB_EXTRAS),[$(HUB_EXTRAS)])"
	umask 022; $(HUB_ENV)/bin/python -m labkit kernel install
	umask 022; $(HUB_ENV)/bin/python -m labkit handout handout
	@cd / && runuser -u nobody -- $(abspath $(HUB_ENV))/bin/python -c "import labkit.capture, jupyter_client.kernelspec as k; assert 'netlab' in k.find_kernel_specs()" \
	  || { echo "make hub: another user cannot use $(HUB_ENV): make the clone readable (chmod -R a+rX $(CURDIR)) and its .venv with $(HUB_PYTHON) (rm -rf $(HUB_ENV); make hub)"; exit 1; }
	@echo "==> $(HUB_ENV) is ready for every user; start the hub: $(HUB_ENV)/bin/jupyterhub -f $(CURDIR)/hub/jupyterhub_config.py"

# The student edition is rebuilt when a notebook or the tool that strips them is newer.
LESSONS := $(wildcard notebooks/[0-9][0-9]-*.ipynb)
HANDOUT := handout/.built

$(HANDOUT): $(LAB) $(LESSONS) labkit/tools/handout.py labkit/tools/solutions.py labkit/tools/exercises.py notebooks/rise.css
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

handout: $(LAB)
	$(BIN)/python -m labkit handout handout

# Static decks with reveal.js copied beside them: no CDN, so they work offline and the folder
# can be copied to the presenting machine as it is.
slides: $(STAMP)
	$(BIN)/python -m labkit slides --outdir slides

doctor: $(LAB)
	$(BIN)/python -m labkit doctor

clean:
	rm -rf $(VENV) handout slides
