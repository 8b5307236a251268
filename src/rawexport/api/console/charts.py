"""Bar charts as plain SVG geometry (no script, no inline style: the CSP allows neither)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 480, 80


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str
    missing: bool  # no value yet (the hour is not exported): a thin grey mark


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    top: str  # the value of the tallest bar, as shown on the axis
    width: int = WIDTH
    height: int = HEIGHT


def bar_chart(values: Sequence[float | None], labels: Sequence[str], unit: str) -> Chart:
    """One bar per value, scaled to the largest; None draws a 2-pixel grey stub."""
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    n = max(len(values), 1)
    step = WIDTH / n
    bars = []
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        h = 2.0 if value is None else max(1.0, value / top * (HEIGHT - 4))
        title = f"{label}: " + ("not exported yet" if value is None else f"{value:,.0f} {unit}")
        bars.append(Bar(i * step + 0.5, HEIGHT - h, max(step - 1, 0.5), h, title, value is None))
    return Chart(bars, f"{top:,.0f} {unit}")
