"""Benchmarks: socketsvc against the Python floor, gunicorn, Celery and huey.

Run with ``python -m bench`` (see :mod:`bench.__main__`).
"""
