"""The model of a daemon that runs tasks is DaemonRecord (its table stays ``socketsvc_worker``)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("socketsvc", "0003_task_ready_notify")]

    operations = [
        migrations.RenameModel(old_name="WorkerRecord", new_name="DaemonRecord"),
        migrations.AlterModelOptions(
            name="daemonrecord",
            options={"ordering": ["-started_at"], "verbose_name": "task daemon"},
        ),
    ]
