"""The campaign's runs record their own start and end (tests/testapp/campaign.py): a run
whose start record committed always gets an end, unless its process dies."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from django.db import OperationalError

from tests.testapp import campaign
from tests.testapp.models import CampaignRun

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_start_record_committed_but_unanswered_still_gets_its_end(monkeypatch):
    """The start's INSERT commits, its reply is lost (a killed session, a restart): the run
    fails before any work, and its row must not stay without an end (the checker would take
    its process's later death for the run's end, and report an overlap with the retry)."""
    recorded = campaign._execute

    def commit_then_lose(sql, params, patient):
        recorded(sql, params, patient)
        if sql.startswith("INSERT"):
            raise OperationalError(2013, "Lost connection to server during query")

    monkeypatch.setattr(campaign, "_execute", commit_then_lose)
    result = SimpleNamespace(id="t-in-doubt", last_attempted_at=datetime.now(UTC))
    context = SimpleNamespace(task_result=result, attempt=2)
    with pytest.raises(OperationalError):
        campaign._recorded(context, "retried", lambda attempt: None)
    (row,) = CampaignRun.objects.filter(task_id="t-in-doubt")
    assert row.ended is not None
    assert row.outcome == "OperationalError"
