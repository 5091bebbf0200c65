import math

import pytest

from edgeprune.schedule import is_pruning_event, resolve_step, sparsity_at

S_I, S_F, T0, T1 = 0.1, 0.8, 10, 110


def at(step, schedule):
    return sparsity_at(step, schedule=schedule, initial=S_I, final=S_F, start=T0, end=T1)


@pytest.mark.parametrize("step", [10, 23, 37, 60, 99, 109])
def test_cubic_is_zhu_and_gupta(step):
    expected = S_F + (S_I - S_F) * (1 - (step - T0) / (T1 - T0)) ** 3
    assert at(step, "cubic") == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("step", [10, 23, 60, 99])
def test_smoothstep_formula_and_differs_from_cubic(step):
    p = (step - T0) / (T1 - T0)
    assert at(step, "smoothstep") == pytest.approx(S_I + (S_F - S_I) * (3 * p * p - 2 * p ** 3))
    if 0 < p < 1:
        assert at(step, "smoothstep") != pytest.approx(at(step, "cubic"))


@pytest.mark.parametrize("step", [10, 35, 60, 100])
def test_linear_and_exponential(step):
    p = (step - T0) / (T1 - T0)
    assert at(step, "linear") == pytest.approx(S_I + (S_F - S_I) * p)
    density = (1 - S_I) * ((1 - S_F) / (1 - S_I)) ** p
    assert at(step, "exponential") == pytest.approx(1 - density)
    assert math.log(1 - at(step, "exponential")) == pytest.approx(
        math.log(1 - S_I) + p * (math.log(1 - S_F) - math.log(1 - S_I)))


@pytest.mark.parametrize("schedule", ["cubic", "smoothstep", "linear", "exponential", "oneshot"])
def test_initial_before_start_final_exactly_at_end_and_held(schedule):
    assert at(0, schedule) == S_I
    assert at(T0 - 1, schedule) == S_I
    assert at(T1, schedule) == S_F
    assert at(T1 + 1000, schedule) == S_F
    values = [at(t, schedule) for t in range(T0, T1 + 1)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:])), "sparsity never decreases"


def test_oneshot_jumps_at_start():
    assert at(T0, "oneshot") == S_F


def test_unknown_schedule_names_the_valid_ones():
    with pytest.raises(ValueError, match="cubic"):
        at(50, "quartic")


def test_events_every_frequency_and_at_end():
    events = [t for t in range(0, 200) if is_pruning_event(t, start=10, end=95, frequency=20)]
    assert events == [10, 30, 50, 70, 90, 95]


def test_resolve_step_fraction_vs_step():
    assert resolve_step(0.25, 400) == 100
    assert resolve_step(1.0, 400) == 400
    assert resolve_step(30, 400) == 30
