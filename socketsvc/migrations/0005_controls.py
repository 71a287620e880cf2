"""Controls: unique and lock keys, expiry, limits kept per task, and the shared limit rows."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("socketsvc", "0004_daemon_record"),
    ]

    operations = [
        migrations.CreateModel(
            name="LimitRecord",
            fields=[
                ("key", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("starts", models.JSONField(default=list)),
                ("updated_at", models.DateTimeField()),
            ],
            options={
                "verbose_name": "limit",
                "db_table": "socketsvc_limit",
            },
        ),
        migrations.AddField(
            model_name="taskrecord",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="taskrecord",
            name="limits",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="taskrecord",
            name="lock_key",
            field=models.CharField(blank=True, db_index=True, max_length=200, null=True),
        ),
        migrations.AddField(
            model_name="taskrecord",
            name="unique_key",
            field=models.CharField(blank=True, max_length=200, null=True),
        ),
        migrations.AddField(
            model_name="taskrecord",
            name="waiting",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
        migrations.AddIndex(
            model_name="taskrecord",
            index=models.Index(fields=["status", "expires_at"], name="socketsvc_task_expiry"),
        ),
        migrations.AddField(
            model_name="taskrecord",
            name="unique_active",
            field=models.GeneratedField(
                db_persist=True,
                expression=models.Case(
                    models.When(status__in=["READY", "RUNNING"], then=models.F("unique_key")),
                    default=None,
                    output_field=models.CharField(max_length=200, null=True),
                ),
                output_field=models.CharField(max_length=200, null=True),
            ),
        ),
        migrations.AddConstraint(
            model_name="taskrecord",
            constraint=models.UniqueConstraint(
                fields=("task_path", "unique_active"), name="socketsvc_task_unique_active"
            ),
        ),
    ]
