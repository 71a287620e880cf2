"""``@limits`` as declared and as enqueued: parsing, validation, keys, unique enqueue, bulk."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from socketsvc.models import TaskRecord, TaskStatus
from socketsvc.tasks import DuplicateTask, enqueue_many, limits
from socketsvc.tasks.limits import Rate, key_for, limits_of, queue_limits, summary
from tests.testapp import controlled
from tests.testapp.tasks import add


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("5/s", 5, 1.0),
        ("100/m", 100, 60.0),
        ("1000/h", 1000, 3600.0),
        ("10/d", 10, 86400.0),
        ("3/10s", 3, 10.0),
        (" 7 / 2.5 min ", 7, 150.0),
    ],
)
def test_a_rate_reads_as_a_count_per_window(text, count, period):
    assert Rate.parse(text) == Rate(count, period)


@pytest.mark.parametrize("text", ["5", "5/", "/s", "0/s", "5/w", "-1/s", "5/0s", "many/s", 5])
def test_a_rate_that_is_not_one_is_refused_with_the_forms_it_takes(text):
    with pytest.raises(ValueError, match=r"'5/s'|count"):
        Rate.parse(text)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency must be an int >= 1"),
        ({"concurrency": 1.5}, "concurrency must be an int >= 1"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": 10, "hard_timeout": 5}, "cannot be < timeout"),
        ({"expires": 60}, "expires must be a positive timedelta"),
        ({"expires": timedelta(0)}, "expires must be a positive timedelta"),
        ({"unique_key": 3}, "unique_key must be a string or a function"),
        ({"on_duplicate": "ignore"}, "on_duplicate must be"),
        ({"rate": "fast"}, "rate must look like"),
    ],
)
def test_limits_that_cannot_hold_are_refused_when_declared(options, message):
    with pytest.raises(ValueError, match=message):
        limits(**options)


def test_a_hard_limit_defaults_to_the_soft_one_plus_a_grace_and_is_kept_with_the_task():
    declared = limits_of(controlled.busy_loop.func)
    assert (declared.timeout, declared.hard_after) == (1, 4.0)
    assert limits(timeout=5)(lambda: None) is not None
    assert summary(declared.stored()) == "timeout 1 s, hard timeout 4 s"


def test_a_key_function_is_called_with_the_tasks_arguments():
    assert key_for(lambda a, b=0: f"k{a}{b}", "lock_key", [1], {"b": 2}) == "k12"
    assert key_for(lambda a: None, "lock_key", [1], {}) is None
    with pytest.raises(TypeError, match="lock_key must give a non-empty string"):
        key_for(lambda a: a, "lock_key", [1], {})
    with pytest.raises(ValueError, match="longer than 200"):
        key_for("x" * 201, "unique_key", [], {})


@pytest.mark.parametrize(
    "declared",
    [[], {"q": []}, {"q": {"concurrency": 0}}, {"q": {"rate": "x"}}, {"q": {"speed": 1}}],
)
def test_queue_limits_that_cannot_hold_stop_the_configuration(declared):
    with pytest.raises(ImproperlyConfigured, match="QUEUE_LIMITS"):
        queue_limits({"QUEUE_LIMITS": declared}, "default")


@pytest.mark.django_db
def test_a_unique_task_enqueued_again_gives_the_queued_one_until_it_finished():
    first = controlled.unique_run.enqueue("k", 1, 0.0)
    again = controlled.unique_run.enqueue("k", 2, 0.0)
    assert again.id == first.id
    assert again.args == ["k", 1, 0.0]  # the queued task's own arguments
    other = controlled.unique_run.enqueue("other", 3, 0.0)
    assert other.id != first.id
    TaskRecord.objects.filter(id=first.id).update(status=TaskStatus.SUCCESSFUL)
    after = controlled.unique_run.enqueue("k", 4, 0.0)
    assert after.id != first.id
    assert TaskRecord.objects.filter(unique_key="k").count() == 2


@pytest.mark.django_db
def test_a_unique_task_declared_to_raise_names_the_one_queued():
    first = controlled.unique_strict.enqueue("x")
    with pytest.raises(DuplicateTask) as raised:
        controlled.unique_strict.enqueue("x")
    assert raised.value.existing == first.id


@pytest.mark.django_db(transaction=True)
def test_a_unique_enqueue_inside_a_transaction_keeps_the_transaction_usable():
    with transaction.atomic():
        first = controlled.unique_run.enqueue("t", 1, 0.0)
        assert controlled.unique_run.enqueue("t", 2, 0.0).id == first.id
        add.enqueue(1, 2)  # the duplicate's failed insert was rolled back to a savepoint only
    assert TaskRecord.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_bulk_enqueue_is_all_or_nothing_and_keeps_the_order_given():
    with transaction.atomic():
        enqueue_many(add, [([n, n], {}) for n in range(50)])
        transaction.set_rollback(True)
    assert TaskRecord.objects.count() == 0
    results = enqueue_many(add, [([n], {"b": 1}) for n in range(2500)])
    assert [result.args for result in results[:2]] == [[0], [1]]
    stored = list(TaskRecord.objects.order_by("enqueued_at").values_list("id", flat=True))
    assert stored == [result.id for result in results]


@pytest.mark.django_db
def test_a_bulk_enqueue_of_a_unique_task_keeps_one_per_key():
    results = enqueue_many(controlled.unique_run, [(["u", n, 0.0], {}) for n in range(5)])
    assert len({result.id for result in results}) == 1


def test_check_warns_that_one_process_cannot_stop_a_stuck_run(settings):
    """socketsvc.W007 names the timed tasks while PROCESSES is 1, and is gone with 2."""
    from socketsvc.checks import check_time_limits

    warned = check_time_limits()
    assert [message.id for message in warned] == ["socketsvc.W007"]
    assert "tests.testapp.controlled.busy_loop" in warned[0].msg
    settings.SOCKETSVC = {**settings.SOCKETSVC, "PROCESSES": 2}
    assert check_time_limits() == []
