"""The operator, running for real (kopf's event loop), against the API emulator."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from tests.emulator import Emulator
from tests.kubelet import Kubelet

JOBS = "lightjob.dev/v1alpha1/lightningjobs"


@dataclass
class Cluster:
    api: Emulator
    kubelet: Kubelet
    url: str
    kubeconfig: str

    def job(self, name: str = "demo") -> dict[str, Any]:
        return self.api.get(JOBS, "default", name)

    def pods(self) -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p for p in self.api.list("v1/pods", "default")["items"]}

    def events(self) -> list[str]:
        items = self.api.list("v1/events", "default")["items"]
        return [f"{e.get('reason')}: {e.get('message')}" for e in items]

    async def wait(self, check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        """Poll until `check()` is truthy (exceptions count as not yet)."""
        deadline = asyncio.get_running_loop().time() + timeout
        last: Exception | None = None
        while asyncio.get_running_loop().time() < deadline:
            try:
                result = check()
                if result:
                    return result
            except Exception as err:
                last = err
            await asyncio.sleep(0.05)
        status = self.api.find(JOBS, "default", "demo")
        raise AssertionError(
            f"timed out waiting for {what or check}; last error {last!r}; "
            f"job status {(status or {}).get('status')}; pods {sorted(self.pods())}"
        )


def write_kubeconfig(path: Path, url: str, token: str = "test-token") -> str:
    """A kubeconfig for the emulator; the token tells the emulator who calls (its callers)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": token}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "tester", "namespace": "default"},
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture
async def emulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    """The API emulator on a free port, a kubeconfig for it, and the kubelet stand-in."""
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    api = Emulator()
    async with api, kmock.Server(api) as server:
        url = str(server.url).rstrip("/")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        monkeypatch.setenv("KUBECONFIG", kubeconfig)
        kubelet = Kubelet(api)
        task = asyncio.create_task(kubelet.run())
        try:
            yield Cluster(api, kubelet, url, kubeconfig)
        finally:
            kubelet.stop()
            await task


class OperatorRun:
    """The real operator (kopf.operator) on a thread and event loop of its own.

    Its own loop, because kopf cancels every task started after it when it stops, and
    the emulator and the kubelet stand-in live in the test's loop.
    """

    def __init__(self, cluster: Any, **overrides: Any) -> None:
        from lightjob.operator.handlers import OperatorConfig

        settings = {
            "namespaces": ("default",),
            "interval": 0.5,
            "backoff_base": 1.0,
            "metrics_port": None,
            "kubeconfig": cluster.kubeconfig,
        }
        settings.update(overrides)
        self.config = OperatorConfig(**settings)
        self._loop = asyncio.new_event_loop()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        import kopf

        from lightjob.operator.handlers import build_registry

        def main() -> None:
            asyncio.set_event_loop(self._loop)
            self._task = self._loop.create_task(
                kopf.operator(
                    registry=build_registry(self.config),
                    clusterwide=not self.config.namespaces,
                    namespaces=list(self.config.namespaces),
                    standalone=self.config.peering is None,
                    peering_name=self.config.peering,
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                )
            )
            try:
                self._loop.run_until_complete(self._task)
            except BaseException:
                pass
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=main, name="operator", daemon=True)
        self._thread.start()
        if not await asyncio.to_thread(self._ready.wait, 30):
            raise TimeoutError("the operator did not start")

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    async def stop(self, hard: bool = False) -> None:
        """Stop gracefully, or (hard) as if the process died: its tasks are cancelled."""
        if hard and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        else:
            self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        self._stop.set()  # kopf waits on this flag in a thread of its own, even when cancelled


@pytest.fixture
async def cluster(emulated: Cluster) -> AsyncIterator[Cluster]:
    """The emulator with the operator running against it."""
    operator = OperatorRun(emulated)
    await operator.start()
    try:
        yield emulated
    finally:
        await operator.stop()
