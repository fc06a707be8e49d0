"""Worker processes for the multi-process tests: started with ``sys.executable``, talking JSON.

Each line a worker prints on stdout is one JSON object (an event, or its final result); a thread
reads them into a queue, and its stderr goes to a file named after it, for assertion messages.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

__all__ = ["Event", "WorkerProcess", "spawning"]

Event: TypeAlias = dict[str, Any]
_W = TypeVar("_W", bound="WorkerProcess")


class WorkerProcess:
    """One worker process, its stdout read line by line (JSON) by a thread, stderr to a file.

    A test module subclasses it, naming its worker ``script`` and its ``timeout``.
    """

    script: Path
    timeout: float = 60.0

    def __init__(self, spec: dict[str, Any], directory: Path, name: str) -> None:
        self.name = name
        self.spec = spec
        self.events: queue.Queue[Event] = queue.Queue()
        self.history: list[Event] = []
        self.stderr_path = directory / f"{name}.stderr"
        env = {k: v for k, v in os.environ.items() if k != "PACKRUN_STORE"}
        env["PYTHONUNBUFFERED"] = "1"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(self.script), json.dumps(spec)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=directory,
                env=env,
            )
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                event: Event = json.loads(line)
            except ValueError:
                event = {"raw": line}
            self.events.put(event)
        self.events.put({"eof": True})

    def describe(self) -> str:
        """Everything the worker said so far, for an assertion message."""
        try:
            stderr = self.stderr_path.read_text(errors="replace")
        except OSError:
            stderr = ""
        return (
            f"worker {self.name} (spec {self.spec}, exit code {self.proc.poll()}):\n"
            f"stdout: {self.history}\nstderr: {stderr[-4000:]}"
        )

    def next(self, timeout: float | None = None) -> Event:
        """The next line the worker writes; fails the test when none comes within ``timeout``."""
        timeout = self.timeout if timeout is None else timeout
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s from {self.describe()}") from None
        self.history.append(event)
        return event

    def wait_event(self, name: str, timeout: float | None = None, **match: Any) -> Event:
        """Skip lines until the event ``name`` (with the given fields) arrives.

        A final line, the end of the output or an unparsable line first fails the test: the worker
        ended or crashed instead.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.0, deadline - time.monotonic()))
            if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                return event
            if "event" not in event:
                raise AssertionError(f"expected the event {name!r} {match}; {self.describe()}")

    def result(self, timeout: float | None = None) -> Event:
        """The worker's final line, after it exited with 0; anything else fails the test."""
        timeout = self.timeout if timeout is None else timeout
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout} s: {self.describe()}") from None
        self.drain()
        finals = [e for e in self.history if "outcome" in e]
        assert code == 0, self.describe()
        assert len(finals) == 1, self.describe()
        assert finals[0]["outcome"] == "done", self.describe()
        assert all("raw" not in e for e in self.history), self.describe()
        return finals[0]

    def drain(self) -> list[Event]:
        """After the worker exited: every line it wrote that was not read yet."""
        self._reader.join(timeout=self.timeout)
        rest: list[Event] = []
        while "eof" not in (event := self.next()):
            rest.append(event)
        return rest

    def kill(self) -> None:
        """SIGKILL the worker and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=self.timeout)

    def close(self) -> None:
        """Kill the worker if it still runs; reap it and release its pipe."""
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=self.timeout)
        finally:
            self._reader.join(timeout=self.timeout)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@contextmanager
def spawning(kind: type[_W], directory: Path) -> Iterator[Callable[[dict[str, Any]], _W]]:
    """Start workers of ``kind`` in ``directory``; each still running at the end is killed and
    reaped (a test's ``spawn`` fixture)."""
    started: list[_W] = []

    def start(spec: dict[str, Any]) -> _W:
        worker = kind(spec, directory, f"worker{len(started)}")
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.close()
