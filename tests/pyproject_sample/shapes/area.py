"""Areas of shapes; each shape takes its own branch so each check covers different lines."""

import math


def area(kind: str, size: float) -> float:
    if kind == "square":
        return size * size
    if kind == "circle":
        return math.pi * size * size
    raise ValueError(f"unknown shape {kind!r}")


def describe(kind: str, size: float) -> str:
    value = area(kind, size)
    if value > 100:
        return f"a big {kind}"
    return f"a small {kind}"
