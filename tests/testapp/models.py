from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)


class Marker(models.Model):
    """A key that may be inserted once: tasks that run twice fail loudly here."""

    key = models.CharField(max_length=100, unique=True)
