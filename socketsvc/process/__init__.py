"""The processes around the server: the run entry (``run``), the master that keeps
worker processes (``master``), starting and hearing them (``spawn``), a worker
process's side (``worker``), ``--reload`` (``reloader``), ``--daemonize``
(``daemonize``) and the open-files limit (``rlimits``)."""
