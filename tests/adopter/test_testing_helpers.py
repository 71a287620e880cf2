"""socketsvc.testing where a user's test goes wrong: the helpers say what happened."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import TestCase

from socketsvc.testing import LiveService, LiveServiceMixin


@pytest.mark.django_db(transaction=True)
def test_a_live_service_that_cannot_start_says_why():
    """runsocketservice exits at start: the error carries what the command printed."""
    with pytest.raises(RuntimeError) as failed:
        LiveService("--workers", "0").start()
    assert "runsocketservice exited at start" in str(failed.value)
    assert "WORKERS'] must be an int between 1 and 1024, not 0" in str(failed.value)


def test_the_live_service_mixin_refuses_a_test_case():
    """With a TestCase the live service could not see the test's data: refused, saying why."""

    class SalesTests(LiveServiceMixin, TestCase):
        pass

    with pytest.raises(ImproperlyConfigured, match="use TransactionTestCase"):
        SalesTests.setUpClass()
