"""Benchmarks: socketsvc against the Python floor, gunicorn, Celery and huey (``bench/run.py``)."""
