"""Zones: named polygons of the picture that label rules can be restricted to.

Points are ``[x, y]`` fractions of the frame (0 = left/top, 1 = right/bottom), as boxes are.
An object is in a zone when its anchor, the bottom centre of its box (where a person or a
car touches the ground, as Frigate decides it), lies inside the polygon, so a person walking
past the far end of a driveway is not "in" it because their head overlaps it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import AfterValidator

Point = tuple[float, float]
Polygon = tuple[Point, ...]
Box = tuple[float, float, float, float]


def _checked(polygon: Polygon) -> Polygon:
    if len(polygon) < 3:
        raise ValueError("a zone's polygon needs at least 3 points")
    if any(not (0.0 <= v <= 1.0) for point in polygon for v in point):
        raise ValueError("a zone's points are fractions of the frame, in [0, 1]")
    return polygon


ZonePolygon = Annotated[Polygon, AfterValidator(_checked)]
"""A polygon as config and API bodies give it (3 points or more, each in the frame)."""


def anchor(box: Box) -> Point:
    x0, _y0, x1, y1 = box
    return ((x0 + x1) / 2, y1)


def area(box: Box) -> float:
    x0, y0, x1, y1 = box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def inside(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd rule (ray casting); a point on the boundary counts as inside."""
    x, y = point
    hit = False
    count = len(polygon)
    for i in range(count):
        (xa, ya), (xb, yb) = polygon[i], polygon[(i + 1) % count]
        if _on_segment(point, (xa, ya), (xb, yb)):
            return True
        if (ya > y) != (yb > y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
            hit = not hit
    return hit


def _on_segment(p: Point, a: Point, b: Point, eps: float = 1e-9) -> bool:
    cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
    if abs(cross) > eps:
        return False
    return min(a[0], b[0]) - eps <= p[0] <= max(a[0], b[0]) + eps and (
        min(a[1], b[1]) - eps <= p[1] <= max(a[1], b[1]) + eps
    )


def zone_of(box: Box, names: Sequence[str], zones: Mapping[str, Polygon]) -> str | None:
    """The first of ``names`` whose polygon holds the box's anchor, or None."""
    point = anchor(box)
    return next((name for name in names if name in zones and inside(point, zones[name])), None)
