# The two commands of the README:
#   make demo    create .venv, migrate the demo database, start the daemon and the admin (Ctrl-C stops)
#   make test    the whole suite on every Python x Django pair the machine has
# Also: make docs   the documentation site (docs/*.md) into docs/_build/html; make test builds it too
PYTHON ?= python3
VENV ?= .venv
DJANGO ?= Django>=5.2,<5.3

.PHONY: demo test venv lint bench docs

demo:
	@.ci/system-deps build
	@$(MAKE) --no-print-directory venv
	$(VENV)/bin/python manage.py rundemo

test:
	.ci/test

# socketsvc against the Python floor, gunicorn, Celery and huey (a few minutes;
# needs Redis on 127.0.0.1:6379); writes docs/benchmarks.md and the chart.
bench:
	@.ci/system-deps test
	@$(MAKE) --no-print-directory venv
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	$(VENV)/bin/python -m bench

# The documentation site (docs/*.md) into docs/_build/html; warnings are errors.
docs:
	@.ci/system-deps build
	@$(MAKE) --no-print-directory venv
	$(VENV)/bin/sphinx-build -W --keep-going -n -b html docs docs/_build/html

# (Re)build the virtualenv when pyproject.toml or the Django pin changes.
venv:
	@stamp="$(VENV)/.socketsvc-installed"; want="$$(cat pyproject.toml | sha1sum) $(DJANGO)"; \
	if [ ! -f "$$stamp" ] || [ "$$(cat "$$stamp")" != "$$want" ]; then \
		echo "installing $(VENV) ($(PYTHON), $(DJANGO))"; \
		$(PYTHON) -m venv "$(VENV)" && \
		"$(VENV)/bin/pip" install -q --upgrade pip && \
		"$(VENV)/bin/pip" install -q -e '.[test]' '$(DJANGO)' && \
		echo "$$want" > "$$stamp"; \
	fi

lint:
	$(VENV)/bin/ruff check socketsvc project tests bench manage.py
	$(VENV)/bin/ruff format --check socketsvc project tests bench manage.py
	$(VENV)/bin/mypy
