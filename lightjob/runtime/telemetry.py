"""What a training process tells the outside: Prometheus metrics and structured logs.

Metrics are served on LIGHTJOB_METRICS_PORT + the local rank. Nothing here runs per step. The Trainer hands numbers over at its logging cadence
(log_every_n_steps) and after checkpoint saves, as plain assignments under a lock.
The scalars are the values the loggers read at that step anyway, and the CUDA
memory figures are allocator counters, so serving adds no device synchronisation. One HTTP server per process (a prometheus_client daemon
thread with its own registry) serves whichever Trainer ran last.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from lightjob.runtime.results import to_float

log = logging.getLogger("lightjob")

PORT_ENV = "LIGHTJOB_METRICS_PORT"
ADDRESS_ENV = "LIGHTJOB_POD_IP"  # set by `lightjob run`, where pods share one host
LOG_FORMAT_ENV = "LIGHTJOB_LOG_FORMAT"  # "text" (the default) or "json"

GAUGES = {
    "global_step": "Optimizer steps taken (the Trainer's global_step).",
    "epoch": "Current epoch.",
    "max_steps": "Optimizer steps the fit will take, when that is known.",
    "steps_per_second": "Optimizer steps per second since the previous update.",
    "samples_per_second": "Training samples per second, all ranks, since the previous update.",
    "checkpoint_save_seconds": "How long the last durable checkpoint took to write.",
    "checkpoint_size_bytes": "Size of the last durable checkpoint.",
    "checkpoint_last_step": "Global step of the last durable checkpoint.",
    "checkpoint_last_timestamp_seconds": "When the last durable checkpoint became durable.",
    "preemption_save_seconds": "How long the checkpoint after SIGTERM took, signal to durable.",
    "cuda_memory_allocated_bytes": "CUDA memory held by tensors on this process's device.",
    "cuda_memory_reserved_bytes": "CUDA memory reserved by the caching allocator.",
}


class Telemetry:
    """The numbers one Trainer publishes; read by the collector at scrape time."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}
        self._scalars: dict[str, Any] = {}  # name -> tensor or float, converted when read
        self._checkpoint_uri = ""
        self._last: tuple[float, int, int] | None = None  # (time, step, samples)

    def progress(self, step: int, epoch: int, samples: int, max_steps: float) -> None:
        """At a logging step: where training is, and its rate since the previous call."""
        now = time.monotonic()
        with self._lock:
            self._values.update(global_step=step, epoch=epoch)
            if max_steps != float("inf") and max_steps >= 0:
                self._values["max_steps"] = max_steps
            if self._last is not None and now > self._last[0]:
                elapsed = now - self._last[0]
                self._values["steps_per_second"] = (step - self._last[1]) / elapsed
                self._values["samples_per_second"] = (samples - self._last[2]) / elapsed
            self._last = (now, step, samples)

    def scalars(self, values: Mapping[str, Any]) -> None:
        with self._lock:
            self._scalars.update(values)

    def checkpoint_saved(self, uri: str, step: int, size: int, seconds: float) -> None:
        with self._lock:
            self._checkpoint_uri = uri
            self._values.update(
                checkpoint_save_seconds=seconds,
                checkpoint_size_bytes=size,
                checkpoint_last_step=step,
                checkpoint_last_timestamp_seconds=time.time(),
            )

    def preemption_saved(self, seconds: float) -> None:
        with self._lock:
            self._values["preemption_save_seconds"] = seconds

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            values, scalars, uri = dict(self._values), dict(self._scalars), self._checkpoint_uri
        if self.device is not None and self.device.type == "cuda":
            # Allocator counters: host-side bookkeeping, no device synchronisation.
            values["cuda_memory_allocated_bytes"] = torch.cuda.memory_allocated(self.device)
            values["cuda_memory_reserved_bytes"] = torch.cuda.memory_reserved(self.device)
        for name, value in values.items():
            yield GaugeMetricFamily(f"lightjob_{name}", GAUGES[name], value=value)
        logged = GaugeMetricFamily(
            "lightjob_logged_metric",
            "Last value of each scalar logged with self.log",
            labels=["name"],
        )
        for name, value in sorted(scalars.items()):
            number = _number(value)
            if number is not None:
                logged.add_metric([name], number)
        yield logged
        if uri:
            info = GaugeMetricFamily(
                "lightjob_checkpoint_last_info",
                "URI of the last durable checkpoint",
                labels=["uri"],
            )
            info.add_metric([uri], 1.0)
            yield info


def _number(value: Any) -> float | None:
    try:
        return float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        return None  # a tensor with several elements, or something that is not a number


class _Current:
    """The registry's one collector: the Telemetry of the Trainer that ran last."""

    def __init__(self) -> None:
        self.telemetry: Telemetry | None = None

    def collect(self) -> Iterator[Any]:
        if self.telemetry is not None:
            yield from self.telemetry.collect()


_current = _Current()
_served: tuple[str, int] | None = None


def serve(telemetry: Telemetry, local_rank: int) -> tuple[str, int] | None:
    """Publish `telemetry` on LIGHTJOB_METRICS_PORT + local_rank; None when no port is set.

    A port that cannot be bound is a warning, not an error: training matters more.
    """
    global _served
    base = os.environ.get(PORT_ENV)
    if not base:
        return None
    _current.telemetry = telemetry
    if _served is not None:
        return _served
    try:
        port = int(base) + local_rank
    except ValueError:
        log.warning("lightjob: %s=%r is not a port number; metrics are off", PORT_ENV, base)
        return None
    address = os.environ.get(ADDRESS_ENV, "")
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_current)
    # Without an address: every interface, IPv6 and IPv4 ("::" is dual-stack on Linux), or
    # IPv4 only where the kernel has no IPv6.
    error: OSError | None = None
    for candidate in [address] if address else ["::", "0.0.0.0"]:
        try:
            start_http_server(port, addr=candidate, registry=registry)
        except OSError as err:
            error = err
            continue
        _served = (candidate, port)
        return _served
    log.warning("lightjob: cannot serve metrics on port %d (%s); metrics are off", port, error)
    return None


def start(enabled: bool, device: torch.device, local_rank: int) -> Telemetry | None:
    """A Telemetry for this fit, served on LIGHTJOB_METRICS_PORT + local rank; None when
    disabled (Trainer(enable_metrics=False)), no port is set, or it cannot be bound."""
    if not enabled:
        return None
    metrics = Telemetry(device)
    return metrics if serve(metrics, local_rank) is not None else None


def write_termination_message(
    step: int, epoch: int, metrics: Callable[[], Mapping[str, Any]], checkpoint: Any = None
) -> None:
    """Under the operator, leave the final step and metrics where Kubernetes reads a
    container's termination message (terminationMessagePath), for the job's status.
    `metrics` reads callback_metrics (only when there is a message to write);
    `checkpoint`: the last durable CheckpointRef, if any."""
    path = os.environ.get("LIGHTJOB_TERMINATION_LOG")
    if path is None:
        default = "/dev/termination-log"
        if "LIGHTJOB_JOB_NAME" not in os.environ or not os.access(default, os.W_OK):
            return
        path = default
    values = {k: to_float(v) for k, v in metrics().items()}
    message: dict[str, Any] = {"step": step, "epoch": epoch, "metrics": values}
    if checkpoint is not None:
        message["checkpoint"] = {
            "uri": checkpoint.uri,
            "step": checkpoint.step,
            "time": checkpoint.time,
        }
    try:
        with open(path, "w") as out:
            json.dump(message, out)
    except OSError as err:
        log.warning("lightjob: could not write the termination message to %s: %s", path, err)


# -- logs -----------------------------------------------------------------------------------------

# Who is logging, added to every record: the Trainer sets rank and node once it knows them.
context: dict[str, Any] = {}
# Fields a caller may attach with `extra=` that the JSON format carries as keys.
FIELDS = ("rank", "node", "world_size", "local_rank", "uri", "step", "seconds", "size", "exit_code")


class LogFormatter(logging.Formatter):
    """`text`: the message, plus [rank R, node N] in a multi-process run. `json`: one object
    per line with time, level, logger, message, rank, node and the record's fields."""

    def __init__(self, fmt: str = "text") -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields = {**context, **{k: getattr(record, k) for k in FIELDS if hasattr(record, k)}}
        error = self.formatException(record.exc_info) if record.exc_info else ""
        if self.json:
            line = {
                "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
                **fields,
            }
            if error:
                line["error"] = error
            return json.dumps(line, default=str)
        text = record.getMessage()
        if int(fields.get("world_size", 1)) > 1:
            text += f" [rank {fields.get('rank')}, node {fields.get('node')}]"
        return f"{text}\n{error}" if error else text


def log_format() -> str:
    fmt = os.environ.get(LOG_FORMAT_ENV, "text").strip().lower() or "text"
    if fmt not in ("text", "json"):
        log.warning("lightjob: %s=%r: use text or json; using text", LOG_FORMAT_ENV, fmt)
        return "text"
    return fmt
