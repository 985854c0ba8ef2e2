"""The one registry behind models and heads: names, duplicates, and errors that list what exists."""

import pytest

from interlock import heads, models
from interlock.registry import Registry


def test_register_get_and_names():
    reg = Registry("widget")

    @reg.register("b")
    def b():
        return "b"

    reg.register("a")(lambda: "a")
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and "a" in reg and "c" not in reg
    assert reg.get("b") is b
    with pytest.raises(ValueError, match=r"unknown widget 'c'; known widgets: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a")(lambda: None)
    with pytest.raises(ValueError, match="non-empty name"):
        reg.register("")


def test_models_and_heads_share_it():
    from interlock.heads._registry import HEADS
    from interlock.models._registry import MODELS

    assert models.names() == MODELS.names() and "resnet32" in MODELS
    assert heads.names() == HEADS.names() and "linear" in HEADS
    with pytest.raises(ValueError, match="unknown model 'nope'; known models: "):
        models.build("nope")
