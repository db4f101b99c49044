# The README's two commands: `make demo` and `make test`. Each bootstraps its own virtualenv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(wildcard plugins/nexus-*))
STAMP := $(VENV)/.nexus-installed

.PHONY: demo demo-example dist test test-core lint bench clean check-redis docs contract-latest

$(STAMP): setup.cfg pyproject.toml $(wildcard plugins/*/pyproject.toml)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[test,lint,embedded,dist]' $(foreach p,$(PLUGINS),-e $(p))
	@touch $@

check-redis:
	@command -v redis-server >/dev/null 2>&1 || [ -n "$$NEXUS_TEST_REDIS_URL" ] || { \
	  echo "make test needs a redis-server binary (the tests start throwaway servers)."; \
	  echo "  Debian/Ubuntu: sudo apt-get install -y redis-server"; \
	  echo "  macOS:         brew install redis"; \
	  echo "  or set NEXUS_TEST_REDIS_URL to a Redis the tests may flush."; \
	  exit 1; }

## make demo: install core + the plugins in this tree and run the HubSpot story against the
## local HubSpot simulator (connect, backfill on a worker, a delta, signed webhooks, a summary)
demo: $(STAMP)
	@BIN=$(BIN) scripts/demo.sh

## make demo-example: the same flow against the synthetic `example` provider
demo-example: $(STAMP)
	@BIN=$(BIN) scripts/demo-example.sh

## make test: the whole suite (core and every plugin) against real Redis / SQLite / PostgreSQL
test: $(STAMP) check-redis
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make contract-latest: the contract tests of our private uses of RQ/urllib3/requests against
## their newest releases (tox env contract-latest, in its own virtualenv)
contract-latest: $(STAMP) check-redis
	$(BIN)/python -m pip install -q 'tox>=4'
	$(BIN)/tox -e contract-latest

## make dist: wheel + sdist of nexus-core and each plugin, `twine check`, and a fresh virtualenv
## with only those wheels running `nexus providers list` (no upload)
dist: $(STAMP)
	@BIN=$(BIN) scripts/dist.sh

## make lint: ruff over the tree, mypy over nexus_core (types at the store and Redis seams)
lint: $(STAMP)
	$(BIN)/ruff check nexus_core plugins tests benchmarks scripts
	$(BIN)/python -m mypy

bench: $(STAMP)
	@for b in http_client webhook_ingress job_overhead backfill_throughput worker_startup \
	  sync_wait cron_tick webhook_routing hubspot_backfill sql_sink scale_out redis_capacity; do \
	  echo "== $$b"; $(BIN)/python benchmarks/$$b.py $(BENCH_ARGS) || exit 1; done

docs: $(STAMP)
	$(BIN)/python scripts/gen_hook_docs.py > docs/hooks.md
	$(BIN)/python scripts/gen_model_docs.py > docs/models.md
	$(BIN)/python scripts/gen_settings_table.py
	$(BIN)/python scripts/gen_example_plugin.py

clean:
	rm -rf $(VENV) build dist *.egg-info plugins/*/*.egg-info .pytest_cache
