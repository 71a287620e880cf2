from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)


class Marker(models.Model):
    """A key that may be inserted once: tasks that run twice fail loudly here."""

    key = models.CharField(max_length=100, unique=True)


class CampaignRun(models.Model):
    """One run of a fault campaign's task, as the run itself recorded it (tests/campaign)."""

    task_id = models.CharField(max_length=64, db_index=True)
    attempt = models.PositiveIntegerField()
    kind = models.CharField(max_length=20)
    pid = models.IntegerField()
    # Epoch seconds on this host's clock: when the run's claim was made, and its work began
    # and ended (null: it never ended by itself, its process was killed).
    claimed_at = models.FloatField()
    started = models.FloatField()
    ended = models.FloatField(null=True)
    outcome = models.CharField(max_length=20, blank=True, default="")
    value = models.CharField(max_length=100, blank=True, default="")


class CampaignCall(models.Model):
    """The effect of one call a fault campaign made: a handler that runs twice leaves two."""

    token = models.CharField(max_length=64, db_index=True)
    pid = models.IntegerField()
