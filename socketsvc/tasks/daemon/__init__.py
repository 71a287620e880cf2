"""The tasks' side that runs in the daemon: claiming and running (``runner``,
``execute``), the daemon's lease and kill switch (``lease``), wake-ups the
database carries (``listen``), periodic schedules (``scheduler``), runs of
daemons that died (``lost``), choosing the runner from the settings
(``serving``) and running due tasks inside a test (``inprocess``)."""
