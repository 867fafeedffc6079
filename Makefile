# SiteWatch — everything a fresh machine needs, from the project's own files.
#   make demo   the whole pipeline locally (brokers, bridge, worker, simulator, webhook receiver)
#   make test   the test suite against real brokers and databases started by the tests
#   make faults the fault suite at full length (kills and outages under load); updates README's table
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := mosquitto influxdb postgresql chromium fonts-wqy-zenhei
WALL_JS := backlog/api/wall_static/vendor/echarts.min.js
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test faults deps system-deps bench clean

demo: deps
	$(VENV)/bin/sitewatch demo $(ARGS)

test: deps
	$(VENV)/bin/lint-imports  # the layering of the house (pyproject.toml, docs/architecture.md)
	$(PY) -m pytest $(ARGS)

# tests/faults at the issue's durations and volumes (the short versions run inside `make test`)
faults: deps
	SW_FAULTS_FULL=1 SW_FAULTS_README=1 $(PY) -m pytest tests/faults $(ARGS)
	SW_FUZZ_EXAMPLES=100000 $(PY) -m pytest -q tests/fuzz  # payload fuzzing, 10x the CI examples

bench: deps
	$(VENV)/bin/sitewatch bench $(ARGS)

deps: system-deps $(STAMP)
deps: $(WALL_JS)

# Debian packages: the MQTT broker, the time-series database, PostgreSQL. Installed only when missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The wall page's chart library (ECharts, pinned by package-lock.json) from the npm registry, copied next to the
# page so the API serves it itself: wall screens work offline, no CDN at runtime. npm from Debian when missing.
$(WALL_JS): package.json package-lock.json
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends npm; }
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(dir $@)
	cp node_modules/echarts/dist/echarts.min.js $@

clean:
	rm -rf $(VENV) .sitewatch .pytest_cache
	rm -rf node_modules $(WALL_JS)
