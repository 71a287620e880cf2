"""The observation's pure parts: the request's trace members, the settings, the per-minute
counts, the percentiles from buckets, the charts' scale, the /metrics view's access."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from socketsvc import protocol
from socketsvc.admin.charts import Line, chart, nice_ceiling
from socketsvc.admin.figures import percentile, window
from socketsvc.conf import build_config
from socketsvc.observe import activity, events, tracing
from socketsvc.observe.activity import BOUNDS, Activity, bucket_of


def _parse(obj: dict) -> protocol.Message:
    return protocol.parse(json.dumps(obj).encode())


def test_a_request_may_carry_the_callers_trace_context():
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message = _parse(
        {"jsonrpc": "2.0", "method": "m", "id": 1, "traceparent": parent, "tracestate": "a=1"}
    )
    assert isinstance(message, protocol.Request)
    assert message.trace == {"traceparent": parent, "tracestate": "a=1"}
    plain = _parse({"jsonrpc": "2.0", "method": "m", "id": 1})
    assert isinstance(plain, protocol.Request) and plain.trace is None


@pytest.mark.parametrize("bad", [17, None, ["x"], "x" * 2000])
def test_a_trace_member_that_is_not_a_short_string_is_an_invalid_request(bad):
    reply = _parse({"jsonrpc": "2.0", "method": "m", "id": 4, "traceparent": bad})
    assert isinstance(reply, dict)
    assert reply["id"] == 4
    assert reply["error"]["code"] == protocol.INVALID_REQUEST
    assert '"traceparent" must be a string' in reply["error"]["message"]


def test_without_a_tracer_provider_nothing_is_sent_or_made():
    """The API is installed but no SDK is set in this process: no members, no spans."""
    assert tracing.installed()
    assert not tracing.active()
    assert tracing.outgoing() is None
    with tracing.call_span("m", 1, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) as s:
        assert s is None
    assert tracing.current_ids() is None


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"METRICS": "yes"}, "True, False or None"),
        ({"METRICS_LISTEN": "9464"}, "host:port"),
        ({"METRICS_LISTEN": "localhost:99999"}, "host:port"),
        ({"METRICS_LISTEN": "relative/path.sock"}, "host:port"),
        ({"METRICS_DIR": "var/metrics"}, "absolute path"),
        ({"METRICS_TOKEN": "short"}, "at least 16"),
        ({"ACTIVITY": 1}, "True or False"),
    ],
)
def test_bad_observation_settings_say_what_is_wrong(settings, problem):
    with pytest.raises(ImproperlyConfigured, match=problem):
        build_config(settings)


def test_good_observation_settings_are_kept():
    config = build_config(
        {
            "METRICS": True,
            "METRICS_LISTEN": "[::1]:9464",
            "METRICS_DIR": "/run/socketsvc/metrics",
            "METRICS_TOKEN": "0123456789abcdef",
            "ACTIVITY": False,
        }
    )
    assert (config.METRICS, config.METRICS_LISTEN, config.ACTIVITY) == (True, "[::1]:9464", False)
    assert build_config({"METRICS_LISTEN": "/run/socketsvc/metrics.sock"}).METRICS_LISTEN


def test_events_cost_nothing_and_raise_nothing_when_off():
    events.disable()
    assert not events.on()
    events.call_answered("m", None, 0.1)
    events.task_started("t", "q", 0.1)
    events.db_up("default", 1.0, time.time())


def test_buckets_and_percentiles_agree():
    assert bucket_of(0.0005) == 0
    assert bucket_of(0.001) == 0
    assert bucket_of(0.0011) == 1
    assert bucket_of(1000) == len(BOUNDS)
    counts = [0.0] * (len(BOUNDS) + 1)
    counts[bucket_of(0.003)] = 50  # (0.0025, 0.005]
    counts[bucket_of(0.7)] = 50  # (0.5, 1.0]
    p50 = percentile(counts, 0.5)
    assert p50 is not None and 0.0025 < p50 <= 0.005
    p99 = percentile(counts, 0.99)
    assert p99 is not None and 0.5 < p99 <= 1.0
    assert percentile([0.0] * len(counts), 0.5) is None
    counts = [0.0] * len(counts)
    counts[-1] = 3
    assert percentile(counts, 0.5) == BOUNDS[-1]


def test_an_outage_is_spread_over_the_minutes_it_covers():
    counted = Activity("default", None)
    start = 1_800_000_000 - 1_800_000_000 % 60 + 50  # 10 s before a minute ends
    counted.outage("default", start, start + 75)
    written: list[list] = []
    counted.flush(written.extend)
    down = {row[0]: row[4] for row in written if row[1] == "db_down"}
    minute = datetime.fromtimestamp(start - 50, UTC)
    assert down == {
        minute: pytest.approx(10.0),
        minute + timedelta(minutes=1): pytest.approx(60.0),
        minute + timedelta(minutes=2): pytest.approx(5.0),
    }


def test_figures_that_could_not_be_written_wait_for_the_next_flush():
    counted = Activity("default", None)
    counted.call(error=True)
    counted.task_started("mail", 0.02)
    counted.task_ended("mail", "failed", 1.5)

    def refuse(rows: list[list]) -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        counted.flush(refuse)
    counted.call(error=False)
    written: list[list] = []
    counted.flush(written.extend)
    totals = {(row[1], row[2], row[3]): row[4] for row in written}
    assert totals[("calls", "", 0)] == 2
    assert totals[("call_errors", "", 0)] == 1
    assert totals[("started", "mail", 0)] == 1
    assert totals[("failed", "mail", 0)] == 1
    assert totals[("duration", "mail", bucket_of(1.5))] == 1
    assert totals[("latency", "mail", bucket_of(0.02))] == 1
    assert timedelta(days=1) < activity.KEEP


def test_the_windows_end_with_the_current_slot():
    now = datetime(2026, 12, 8, 10, 7, 30, tzinfo=UTC)
    hour = window("hour", now)
    assert hour.slots == 60 and hour.index(now) == 59
    assert hour.index(now - timedelta(minutes=59)) == 0
    assert hour.index(now - timedelta(minutes=61)) is None
    day = window("day", now)
    assert (day.slots, day.seconds) == (96, 900)
    assert day.index(now) == 95
    assert window("bogus", now).name == "hour"


def test_a_chart_scales_to_a_round_top_and_leaves_gaps():
    assert [nice_ceiling(v) for v in (0, 0.7, 1, 3, 7, 12, 240)] == [1, 1, 1, 5, 10, 20, 250]
    times = window("hour").times()
    drawn = chart(
        "Queue <depth>", times, [Line("mail", [None, 1.0, 2.0] + [None] * 57)], [0.0] * 60
    )
    assert "Queue &lt;depth&gt;" in drawn
    assert drawn.count("<polyline") == 1
    empty = chart("Nothing", times, [Line("a", [None] * 60)], [1.0] + [0.0] * 59)
    assert "Nothing yet" in empty
    assert empty.count('class="socketsvc-down"') == 1


@pytest.mark.django_db
class TestMetricsView:
    def test_no_credentials_is_401_with_a_bearer_challenge(self, client: Client, settings):
        settings.SOCKETSVC = {"SOCKET": "/nonexistent/x.sock", "METRICS_TOKEN": "s" * 20}
        response = client.get("/metrics")
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")

    def test_a_wrong_token_is_403_and_a_right_one_reaches_for_the_daemon(
        self, client: Client, settings
    ):
        settings.SOCKETSVC = {"SOCKET": "/nonexistent/x.sock", "METRICS_TOKEN": "s" * 20}
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 403
        right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer " + "s" * 20)
        assert right.status_code == 503
        assert "did not answer" in right.content.decode()

    def test_a_token_is_refused_when_none_is_configured(self, client: Client, settings):
        settings.SOCKETSVC = {"SOCKET": "/nonexistent/x.sock"}
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 403

    def test_a_user_needs_the_dashboards_view_permission(self, client: Client, settings):
        settings.SOCKETSVC = {"SOCKET": "/nonexistent/x.sock"}
        user = User.objects.create_user("watcher", password="pw", is_staff=True)
        client.force_login(user)
        assert client.get("/metrics").status_code == 403
        user.user_permissions.add(Permission.objects.get(codename="view_activityrecord"))
        user = User.objects.get(pk=user.pk)
        client.force_login(user)
        assert client.get("/metrics").status_code == 503
        assert client.post("/metrics").status_code == 405


def test_metrics_on_an_address_other_hosts_reach_is_a_warning(settings):
    from socketsvc.checks import check_metrics

    settings.SOCKETSVC = {"METRICS_LISTEN": "0.0.0.0:9464"}
    assert [m.id for m in check_metrics()] == ["socketsvc.W008"]
    for quiet in ("127.0.0.1:9464", "[::1]:9464", "/run/socketsvc/metrics.sock"):
        settings.SOCKETSVC = {"METRICS_LISTEN": quiet}
        assert check_metrics() == []
