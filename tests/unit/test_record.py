"""Value classes made by k8scc.record behave as the dataclasses they replace."""

from __future__ import annotations

from typing import Any

import pytest

from k8scc import record as records
from k8scc.record import field, mutable_record, record

pytestmark = pytest.mark.unit


@record
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)
    hidden: str | None = field(default=None, repr=False)


@record
class Pair:
    a: int
    b: str


@mutable_record
class Counter:
    name: str
    count: int = 0


def test_fields_come_in_order_positionally_or_by_name_with_their_defaults() -> None:
    assert records.as_dict(Point(1)) == {"x": 1, "y": 0, "tags": [], "hidden": None}
    assert records.as_dict(Point(1, 2, ["a"], "s")) == {
        "x": 1,
        "y": 2,
        "tags": ["a"],
        "hidden": "s",
    }
    assert Point(y=3, x=4).y == 3
    assert records.fields(Point(1)) == ("x", "y", "tags", "hidden")


def test_each_value_gets_its_own_default_from_a_factory() -> None:
    first, second = Point(1), Point(2)
    first.tags.append("a")
    assert second.tags == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing argument 'x'"),
        ((1, 2, [], None, 5), {}, "takes 4 arguments, 5 given"),
        ((1,), {"z": 1}, "unexpected or repeated argument 'z'"),
        ((1,), {"x": 2}, "unexpected or repeated argument 'x'"),
    ],
)
def test_wrong_arguments_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_a_record_is_frozen_and_a_mutable_record_is_not() -> None:
    point = Point(1)
    with pytest.raises(AttributeError, match="cannot change field 'x' of Point"):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.x
    counter = Counter("c")
    counter.count += 1
    assert counter.count == 1


def test_equality_and_hashing_follow_the_fields() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(1, 3)
    same_values: Any = (1, 0, [], None)
    assert Point(1) != same_values
    assert Counter("c") == Counter("c")
    assert hash(Pair(1, "a")) == hash(Pair(1, "a"))
    assert len({Pair(1, "a"), Pair(1, "a"), Pair(1, "b")}) == 2
    with pytest.raises(TypeError):
        hash(Counter("c"))


def test_repr_shows_fields_but_not_the_hidden_ones() -> None:
    text = repr(Point(1, hidden="not for logs"))
    assert text == "Point(x=1, y=0, tags=[])"
    assert "not for logs" not in text


def test_replace_copies_with_changes() -> None:
    point = Point(1, 2, ["a"], "s")
    moved = records.replace(point, y=5)
    assert (moved.x, moved.y, moved.tags, moved.hidden) == (1, 5, ["a"], "s")
    assert point.y == 2
    with pytest.raises(TypeError, match="unexpected or repeated argument 'z'"):
        records.replace(point, z=1)
