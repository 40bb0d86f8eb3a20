import pytest
from shapes.area import area, describe
from shapes.registry import Registry


@pytest.fixture
def registry():
    opened = Registry()
    yield opened
    opened.close()


def test_square():
    assert area("square", 3) == 9


def test_circle_big():
    assert describe("circle", 10) == "a big circle"


@pytest.mark.parametrize("size", [1, 2])
def test_small_square(size):
    assert describe("square", size) == "a small square"


def test_unknown():
    with pytest.raises(ValueError):
        area("hexagon", 1)


def test_registry(registry):
    registry.add("square")
    assert registry.names == ["square"]
