"""Status conditions, following Kubernetes API conventions."""

from __future__ import annotations

import datetime as dt

from lightjob.api.models import Condition, LightningJobStatus

# One condition per phase that is a state worth alerting on; the phase's own is True.
CONDITION_TYPES = ("Running", "Restarting", "Suspended", "Succeeded", "Failed")


def set_conditions(
    status: LightningJobStatus, reason: str, now: dt.datetime, generation: int
) -> None:
    """Make the condition of the current phase True and the others False.

    lastTransitionTime moves only when a condition's status flips; conditions that were
    never True are not added just to say False.
    """
    existing = {c.type: c for c in status.conditions}
    updated = []
    for kind in CONDITION_TYPES:
        active = status.phase == kind
        old = existing.get(kind)
        if old is None and not active:
            continue
        value = "True" if active else "False"
        flipped = old is None or old.status != value
        updated.append(
            Condition(
                type=kind,
                status=value,
                # The reason given when the condition became True stays while it lasts.
                reason=(old.reason if old and not flipped else reason)
                if active
                else (old.reason if old and not flipped else status.phase),
                message=status.message if active else "",
                last_transition_time=now if flipped or old is None else old.last_transition_time,
                observed_generation=generation,
            )
        )
    others = [c for c in status.conditions if c.type not in CONDITION_TYPES]
    status.conditions = updated + others


def set_condition(
    status: LightningJobStatus,
    kind: str,
    active: bool,
    reason: str,
    message: str,
    now: dt.datetime,
    generation: int,
) -> None:
    """Set one condition that is not a phase's (PodCreationRefused, ...). A condition that
    was never True is not added just to say False; lastTransitionTime moves on flips."""
    old = next((c for c in status.conditions if c.type == kind), None)
    if old is None and not active:
        return
    value = "True" if active else "False"
    flipped = old is None or old.status != value
    new = Condition(
        type=kind,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=now if flipped or old is None else old.last_transition_time,
        observed_generation=generation,
    )
    status.conditions = [new if c.type == kind else c for c in status.conditions]
    if old is None:
        status.conditions.append(new)
