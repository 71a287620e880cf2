"""The process around the server: the run entry (``run``), the master that keeps
worker processes (``master``), starting and hearing them (``spawn``), a worker
process's side (``worker``), systemd (``systemd``), ``--daemonize``
(``daemonize``), the open-files limit (``rlimits``) and logging (``logsetup``)."""
