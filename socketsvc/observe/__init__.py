"""What the daemon tells about itself: Prometheus metrics, OpenTelemetry traces, and the
per-minute activity the admin's dashboard draws.

:mod:`~socketsvc.observe.events` is what the rest of the daemon calls where things happen;
it costs one test when metrics and activity are off. :mod:`~socketsvc.observe.prom`
holds the metrics (``socketsvc[metrics]``), :mod:`~socketsvc.observe.tracing` the spans
(``socketsvc[otel]``), :mod:`~socketsvc.observe.activity` the per-minute counts and
:mod:`~socketsvc.observe.depth` the queues' figures. Everything else calls into this
folder, so it imports nothing of the daemon: the processes switch it on
(:mod:`socketsvc.process.observing`), the admin draws it (``admin/dashboard.py``) and
the project's URLs serve it (:mod:`socketsvc.views`).
"""
