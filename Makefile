# dbkit — the two front-door commands (see README.md):
#   make demo   set up what is missing, start the embedded dev cluster, run the main job
#   make test   set up what is missing, run the whole test suite against a real PostgreSQL
.PHONY: demo test bootstrap bench clean

VENV := .venv
DBKIT := $(VENV)/bin/dbkit
# a worker per core (at most 4), each with its own PostgreSQL and S3 server; a test file stays on one worker
PYTEST_ARGS ?= -n auto --maxprocesses 4 --dist loadfile

bootstrap:
	@bash scripts/bootstrap

demo: bootstrap
	@bash scripts/demo

# pytest exits 5 when it collected no test: that is a failure here, never a silent pass.
test: bootstrap
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; exit 1; fi; \
	exit $$rc

bench: bootstrap
	$(VENV)/bin/python bench/cli_startup.py
	$(VENV)/bin/python bench/seed_bench.py

clean:
	-$(DBKIT) dev down --purge
	rm -rf $(VENV) .pytest_cache
