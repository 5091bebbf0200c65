"""Sparsity schedules: pure functions of the step, each the formula named in its docstring.

All share the frame of Zhu & Gupta 2017: sparsity is `initial` before `start`, moves to `final` between
`start` and `end`, and is held at exactly `final` from `end` on. Masks change only at pruning events
(every `frequency` steps from `start`, plus `end` itself so the final sparsity is hit exactly there).
"""

from __future__ import annotations

from typing import Callable

# progress p in [0, 1] -> fraction of the way from initial to final sparsity
_SHAPES: dict[str, Callable[[float], float]] = {}


def _shape(name: str):
    def register(fn):
        _SHAPES[name] = fn
        return fn
    return register


@_shape("cubic")
def cubic(p: float) -> float:
    """Zhu & Gupta 2017: s_t = s_f + (s_i - s_f)(1 - p)^3, i.e. fraction 1 - (1 - p)^3: prune fast early."""
    return 1.0 - (1.0 - p) ** 3


@_shape("smoothstep")
def smoothstep(p: float) -> float:
    """3p^2 - 2p^3, slow at both ends; what some tutorials call 'cubic' (it is not Zhu & Gupta's)."""
    return 3.0 * p * p - 2.0 * p ** 3


@_shape("linear")
def linear(p: float) -> float:
    return p


@_shape("oneshot")
def oneshot(p: float) -> float:
    """All at once at `start`."""
    return 1.0


def schedule_names() -> tuple[str, ...]:
    return (*_SHAPES, "exponential")


def resolve_step(value: int | float, total_steps: int) -> int:
    """A float in [0, 1] is a fraction of the total steps; an int is already a step."""
    if isinstance(value, float):
        return int(round(value * total_steps))
    return int(value)


def sparsity_at(step: int, *, schedule: str, initial: float, final: float, start: int, end: int) -> float:
    """Target sparsity after `step` optimizer steps (start/end already resolved to steps)."""
    if step < start:
        return initial
    if step >= end or end <= start:
        return final
    p = (step - start) / (end - start)
    if schedule == "exponential":
        # density decays geometrically: (1 - s_t) = (1 - s_i) * ((1 - s_f) / (1 - s_i))^p
        return 1.0 - (1.0 - initial) * ((1.0 - final) / (1.0 - initial)) ** p
    try:
        shape = _SHAPES[schedule]
    except KeyError:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(schedule_names())}") from None
    return initial + (final - initial) * shape(p)


def is_pruning_event(step: int, *, start: int, end: int, frequency: int) -> bool:
    """Masks are recomputed at start, every `frequency` steps after it, and exactly at `end`."""
    if step < start or step > end:
        return False
    return step == end or (step - start) % frequency == 0
