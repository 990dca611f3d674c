"""Schedules of a loss weight over optimizer steps: KL warm-up and cyclical annealing.

Each schedule is a pure function of the step (the number of optimizer updates done so far,
the model's ``num_steps`` buffer), so a model restored from a checkpoint continues its
schedule where it stopped. Values go from ``start`` (0 by default) to ``end`` (1).

- ``constant``: always ``end``.
- ``linear`` (KL warm-up, Bowman et al. 2016, "Generating Sentences from a Continuous
  Space"; Sonderby et al. 2016, "Ladder Variational Autoencoders"): rises linearly from
  ``start`` at step 0 to ``end`` at step ``steps``, then holds.
- ``cyclical`` (Fu et al. 2019, "Cyclical Annealing Schedule: A Simple Approach to
  Mitigating KL Vanishing", Eq. 6): the steps are split into cycles of ``steps`` updates;
  with tau = (step mod steps) / steps the position within the cycle, the value is
  f(tau) = tau / R for tau <= R (a linear rise over the first proportion R of the cycle)
  and 1 for tau > R. With ``cycles`` set, it holds at ``end`` after that many cycles.

The same functions drive other annealed quantities, e.g. the capacity C of Burgess et al.
2018 (:mod:`vaebench.models.beta_vae`).
"""

from __future__ import annotations

#: Names accepted by a config's ``kl_schedule`` field.
SCHEDULES = ("constant", "linear", "cyclical")


def linear(step: int, steps: int, start: float = 0.0, end: float = 1.0) -> float:
    """``start + (end - start) * min(1, step / steps)``; ``end`` at once when ``steps`` is 0."""
    if step < 0 or steps < 0:
        raise ValueError(f"step and steps must be non-negative, got step={step}, steps={steps}")
    if steps == 0 or step >= steps:
        return end
    return start + (end - start) * step / steps


def cyclical(step: int, steps: int, ratio: float = 0.5, cycles: int | None = None,
             start: float = 0.0, end: float = 1.0) -> float:
    """Cyclical annealing of Fu et al. 2019 with cycles of ``steps`` updates.

    Within a cycle the value rises linearly from ``start`` to ``end`` over the first
    ``ratio * steps`` updates (R = ``ratio``) and holds at ``end`` for the rest; after
    ``cycles`` full cycles (if given) it stays at ``end``.
    """
    if step < 0 or steps <= 0:
        raise ValueError(f"cyclical needs step >= 0 and steps > 0, got step={step}, "
                         f"steps={steps}")
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if cycles is not None and step >= cycles * steps:
        return end
    tau = (step % steps) / steps
    return start + (end - start) * min(1.0, tau / ratio)


def check_schedule(schedule: str, steps: int) -> None:
    """Raise a ValueError naming the field when a ``kl_schedule`` setting is unusable."""
    if schedule not in SCHEDULES:
        raise ValueError(f"kl_schedule must be one of {', '.join(map(repr, SCHEDULES))}, "
                         f"got {schedule!r}")
    if schedule != "constant" and steps <= 0:
        raise ValueError(f"kl_anneal_steps must be a positive number of steps for "
                         f"kl_schedule={schedule!r}, got {steps}")


def schedule_value(schedule: str, step: int, steps: int, ratio: float = 0.5,
                   cycles: int | None = None) -> float:
    """Value in [0, 1] of the schedule named ``schedule`` at ``step``."""
    check_schedule(schedule, steps)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return linear(step, steps)
    return cyclical(step, steps, ratio, cycles)
