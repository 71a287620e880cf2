from django.apps import AppConfig


class DupAppConfig(AppConfig):
    name = "tests.dupapp"
    label = "dupapp"
