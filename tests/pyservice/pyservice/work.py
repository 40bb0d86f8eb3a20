"""What the handlers compute: branches and loops, so that each test's lines differ."""

from __future__ import annotations

import math


def area(shape: str, size: float) -> float:
    if shape == "square":
        return size * size
    if shape == "circle":
        radius = size
        return math.pi * radius * radius
    raise ValueError(f"unknown shape {shape!r}")


def primes(limit: int) -> list[int]:
    found = []
    for candidate in range(2, limit + 1):
        if all(candidate % divisor for divisor in found if divisor * divisor <= candidate):
            found.append(candidate)
    return found


def count_words(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for word in text.lower().split():
        word = word.strip(".,;:!?")
        if word:
            counts[word] = counts.get(word, 0) + 1
    return counts
