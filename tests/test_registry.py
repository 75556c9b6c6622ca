"""Registries: names to implementations; unknown names fail with the valid ones listed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consumer.fusion import FUSIONS, make_fusion
from consumer.index import INDEXES, make_index
from consumer.registry import Registry
from consumer.scorers import SCORERS, make_scorer


class Base:
    pass


def test_register_get_and_sorted_names() -> None:
    registry: Registry[Base] = Registry("widget")

    @registry.register("zeta")
    class Zeta(Base):
        pass

    @registry.register("alpha")
    class Alpha(Base):
        pass

    assert registry.get("zeta") is Zeta and registry.get("alpha") is Alpha
    assert registry.names() == ["alpha", "zeta"]


def test_registering_a_name_twice_is_an_error() -> None:
    registry: Registry[Base] = Registry("widget")
    registry.register("one")(Base)
    with pytest.raises(ValueError, match="widget 'one' is registered twice"):
        registry.register("one")(type("Other", (Base,), {}))


def test_unknown_name_lists_the_valid_ones() -> None:
    registry: Registry[Base] = Registry("widget")
    registry.register("b")(Base)
    registry.register("a")(type("A", (Base,), {}))
    with pytest.raises(ValueError, match=r"unknown widget 'c'; valid: a, b"):
        registry.get("c")


@pytest.mark.parametrize(
    ("registry", "make", "expected"),
    [
        (SCORERS, lambda name: make_scorer(name), {"bm25", "dense", "neighbors", "popularity"}),
        (FUSIONS, lambda name: make_fusion(name, ["dense"]), {"linear", "rrf"}),
        (INDEXES, lambda name: make_index(name, 8), {"exact"}),
    ],
    ids=["scorers", "fusions", "indexes"],
)
def test_real_registries_reject_unknown_names(
    registry: Registry[Any], make: Callable[[str], Any], expected: set[str]
) -> None:
    assert expected <= set(registry.names())
    with pytest.raises(ValueError) as info:
        make("no-such-thing")
    message = str(info.value)
    assert "'no-such-thing'" in message
    for name in registry.names():  # implementations registered later are listed too
        assert name in message


def test_each_implementation_knows_its_registered_name() -> None:
    for name in SCORERS.names():
        assert SCORERS.get(name).name == name
    for name in FUSIONS.names():
        assert FUSIONS.get(name).name == name
    for name in INDEXES.names():
        assert INDEXES.get(name).kind == name
