"""Training progress: what node 0's metrics endpoint says, and what status makes of it.

Pure. The operator fetches the Prometheus text from node 0 (pod IP, the `metrics` port);
`parse` reads the runtime's gauges (lightjob/runtime/telemetry.py) out of it, and
`update` folds a sample into status.progress and status.lastCheckpoint. A sample that
says nothing new changes nothing, so status is written only when training moved.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field

from lightjob.api.models import CheckpointRef, LightningJobStatus, Progress

# At most this many logged scalars reach status; the rest stay in Prometheus.
MAX_METRICS = 8
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of node 0's rank 0."""

    step: int | None = None
    epoch: int | None = None
    max_steps: int | None = None
    steps_per_second: float | None = None
    samples_per_second: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint_uri: str = ""
    checkpoint_step: int | None = None
    checkpoint_time: float | None = None  # unix seconds


def parse(text: str) -> Sample:
    """The runtime's gauges from the Prometheus text exposition format."""
    values: dict[str, float] = {}
    metrics: dict[str, float] = {}
    uri = ""
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue  # comments (# HELP, # TYPE) and blank lines
        name, labels, raw = match.groups()
        try:
            value = float(raw)
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        found = {k: _unescape(v) for k, v in _LABEL.findall(labels or "")}
        if name == "lightjob_logged_metric" and "name" in found:
            metrics[found["name"]] = value
        elif name == "lightjob_checkpoint_last_info" and "uri" in found:
            uri = found["uri"]
        elif name.startswith("lightjob_"):
            values[name.removeprefix("lightjob_")] = value

    def integer(key: str) -> int | None:
        return int(values[key]) if key in values else None

    return Sample(
        step=integer("global_step"),
        epoch=integer("epoch"),
        max_steps=integer("max_steps"),
        steps_per_second=values.get("steps_per_second"),
        samples_per_second=values.get("samples_per_second"),
        metrics=metrics,
        checkpoint_uri=uri,
        checkpoint_step=integer("checkpoint_last_step"),
        checkpoint_time=values.get("checkpoint_last_timestamp_seconds"),
    )


def _unescape(value: str) -> str:
    return value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def update(
    status: LightningJobStatus, sample: Sample, now: dt.datetime, chosen: list[str] | None = None
) -> None:
    """Fold a sample into status. lastSeenTime moves only when the step moved, so it says
    when training was last seen making progress. `chosen` names the metrics to keep
    (spec.metrics.statusMetrics); by default, up to MAX_METRICS, loss-like first."""
    if sample.step is None:
        return
    old = status.progress or Progress()
    metrics = _chosen(sample.metrics, chosen)
    moved = sample.step != old.step or old.last_seen_time is None
    status.progress = Progress(
        epoch=sample.epoch,
        step=sample.step,
        max_steps=sample.max_steps,
        samples_per_second=_rounded(sample.samples_per_second),
        eta=_eta(sample) if moved else old.eta,
        loss=next(iter(metrics.values()), None) if chosen else headline(metrics),
        metrics=metrics,
        last_seen_time=now if moved else old.last_seen_time,
    )
    if sample.checkpoint_uri and sample.checkpoint_step is not None:
        when = (
            dt.datetime.fromtimestamp(sample.checkpoint_time, dt.timezone.utc).replace(
                microsecond=0
            )
            if sample.checkpoint_time is not None
            else None
        )
        status.last_checkpoint = CheckpointRef(
            uri=sample.checkpoint_uri, step=sample.checkpoint_step, time=when
        )


def _order(name: str) -> tuple[bool, str]:
    return "loss" not in name.lower(), name  # loss-like names first, then by name


def _chosen(metrics: dict[str, float], chosen: list[str] | None) -> dict[str, float]:
    """The chosen names, or at most MAX_METRICS with loss-like names first; to 4
    significant digits (status is for people; Prometheus has the exact values)."""
    if chosen:
        names = [n for n in chosen if n in metrics]
    else:
        names = sorted(metrics, key=_order)[:MAX_METRICS]
    return {n: float(f"{metrics[n]:.4g}") for n in names}


def headline(metrics: dict[str, float]) -> float | None:
    """What the Loss column shows: train_loss or loss (per step or epoch), else a metric
    whose name says loss, else the first logged metric by name."""
    if not metrics:
        return None
    for preferred in ("train_loss", "loss", "train_loss_step", "loss_step"):
        if preferred in metrics:
            return metrics[preferred]
    return metrics[min(metrics, key=_order)]


def _rounded(value: float | None) -> float | None:
    return float(f"{value:.3g}") if value is not None else None


def _eta(sample: Sample) -> str | None:
    if not sample.max_steps or not sample.steps_per_second or sample.step is None:
        return None
    seconds = max(0, sample.max_steps - sample.step) / sample.steps_per_second
    return duration(seconds)


def duration(seconds: float) -> str:
    """As kubectl prints ages: 45s, 12m, 3h20m, 2d4h."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"
