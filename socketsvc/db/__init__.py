"""The database lifecycle under the daemon.

``lifecycle`` wraps a unit of work (a call, a task, the daemon's own
bookkeeping) as Django wraps a web request; ``liveness`` tells whether a
connection is alive; ``outages`` lets connects wait out a database restart;
``stats`` counts what the lifecycle did; ``probe`` checks the databases at
start; ``pgpool`` puts Django's PostgreSQL pool under the same checks; and
``vendors/`` knows each database's errors, timeouts and checks (a leaf: it
imports nothing else of socketsvc but the settings).
"""
