"""Arguments that JSON cannot carry are refused with the task and the argument named."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from socketsvc import call
from socketsvc.models import TaskRecord
from tests.testapp.tasks import add, mark


@pytest.mark.django_db
def test_a_keyword_argument_that_is_not_json_names_the_task_and_the_argument():
    with pytest.raises(TypeError) as refused:
        mark.enqueue(key=datetime.date(2026, 12, 7))
    message = str(refused.value)
    assert "tests.testapp.tasks.mark" in message
    assert "the argument key is a date" in message
    assert not TaskRecord.objects.exists()  # nothing stored


@pytest.mark.django_db
def test_a_positional_argument_nested_in_a_list_is_named_by_its_path():
    with pytest.raises(TypeError, match=r"the argument args\[1\]\[2\] is a Decimal"):
        add.enqueue(1, [1, 2, Decimal("3")])


@pytest.mark.django_db
def test_a_dict_key_json_cannot_carry_is_named():
    with pytest.raises(TypeError, match=r"the argument key \(its key \(1, 2\)\) is a tuple"):
        mark.enqueue(key={(1, 2): "pair"})


@pytest.mark.django_db
def test_json_arguments_still_enqueue_and_tuples_become_lists():
    result = add.enqueue(1, (2, 3))
    assert TaskRecord.objects.get(id=result.id).args == [1, [2, 3]]


def test_call_names_the_method_and_the_param_that_is_not_json():
    with pytest.raises(TypeError) as refused:
        call("shop.sell", sku="MUG-01", when=datetime.date(2026, 12, 7))
    assert "the params of shop.sell must be JSON: when is a date" in str(refused.value)
