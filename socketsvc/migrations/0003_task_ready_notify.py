"""PostgreSQL: NOTIFY socketsvc_task_ready (payload: the queue) when a task becomes READY.

Daemons LISTEN for it (socketsvc.tasks.daemon.listen), so a task committed on any
host, or by a process with no daemon, wakes every idle daemon at once. Other
databases get nothing here.
"""

from typing import Any

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION socketsvc_task_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('socketsvc_task_ready', NEW.queue_name);
    RETURN NULL;
END
$$
"""
TRIGGERS = [
    "CREATE TRIGGER socketsvc_task_ready_inserted AFTER INSERT ON socketsvc_task "
    "FOR EACH ROW WHEN (NEW.status = 'READY') EXECUTE FUNCTION socketsvc_task_ready()",
    "CREATE TRIGGER socketsvc_task_ready_again AFTER UPDATE OF status ON socketsvc_task "
    "FOR EACH ROW WHEN (NEW.status = 'READY' AND OLD.status <> 'READY') "
    "EXECUTE FUNCTION socketsvc_task_ready()",
]
DROP = [
    "DROP TRIGGER IF EXISTS socketsvc_task_ready_again ON socketsvc_task",
    "DROP TRIGGER IF EXISTS socketsvc_task_ready_inserted ON socketsvc_task",
    "DROP FUNCTION IF EXISTS socketsvc_task_ready()",
]


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for statement in [FUNCTION, *TRIGGERS]:
            schema_editor.execute(statement)


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for statement in DROP:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("socketsvc", "0002_fencing")]

    operations = [migrations.RunPython(create, drop)]
