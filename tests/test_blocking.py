"""``packrun.blocking``: the runtime for synchronous executors (DESIGN.md sections 11 and 19).

The same methods, called without ``await``, from any number of threads; a run is a ``with``
block that keeps its version; the runtime opens on return and closes with ``with`` or ``close()``.
"""

from __future__ import annotations

import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import packrun
from packrun import blocking

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
KEY = packrun.Auth.api_key("k")


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


def test_with_block__publish_install_resolve_and_run_without_await(tmp_path: Path) -> None:
    with blocking.open_runtime(f"sqlite:///{tmp_path / 'state.db'}") as rt:
        entry = rt.publish(dist("1.0.0"))
        rt.install("acme-prod", "acme")
        assert rt.resolve("acme-prod").version == "1.0.0"
        assert [e.version for e in rt.versions("acme")] == [entry.version]
        with rt.run("acme-prod", run_id="r-1", workflow_id="wf", auth=KEY) as run:
            out = run.call("list_contacts", {"limit": 2})
            assert (run.run_id, run.version, run.digest) == ("r-1", "1.0.0", entry.digest)
            assert rt.in_flight("acme", "1.0.0") == 1
        assert len(out["contacts"]) == 2
        assert run.calls == frozenset({"list_contacts"})
        assert rt.in_flight("acme", "1.0.0") == 0
        assert "resolves to: acme 1.0.0" in str(rt.explain("acme-prod"))
        assert rt.stats().runs_started == 1
        assert rt.call("acme-prod", "list_contacts", {"limit": 1}, auth=KEY)["contacts"]
    assert rt.closed


def test_a_run__keeps_its_version_while_the_pin_moves(tmp_path: Path) -> None:
    with blocking.open_runtime("memory:") as rt:
        rt.publish(dist("1.0.0"))
        rt.install("acme-prod", "acme")
        with rt.run("acme-prod", auth=KEY) as run:
            rt.publish(dist("1.0.1"))
            rt.update("acme-prod", to="1.0.1", actor="ops")
            assert rt.resolve("acme-prod").version == "1.0.1"
            run.call("list_contacts")
            assert run.version == "1.0.0"
        assert rt.version_status("acme", "1.0.0") == "drained"


def test_a_run_on_a_chosen_version__binds_to_it_and_leaves_the_pin() -> None:
    with blocking.open_runtime("memory:") as rt:
        rt.publish(dist("1.0.0"))
        rt.publish(dist("1.1.0"))
        rt.install("acme-prod", "acme", pin="1.0.0")
        with rt.run("acme-prod", auth=KEY, version="1.1.0") as run:
            assert (run.version, run.chosen) == ("1.1.0", True)
            assert rt.runs_in_flight("acme", "1.1.0") == [run.run_id]
        assert rt.resolve("acme-prod").version == "1.0.0"
        assert rt.call("acme-prod", "list_contacts", {"limit": 1}, auth=KEY, version="1.1.0")


def test_a_run__ends_when_its_block_raises_and_errors_come_through_unchanged() -> None:
    with blocking.open_runtime("memory:") as rt:
        rt.publish(dist("1.0.0"))
        rt.install("acme-prod", "acme")
        with pytest.raises(packrun.ToolFailed) as failed, rt.run("acme-prod") as run:
            run.call("list_contacts")  # no credentials: the tool refuses
        assert failed.value.tool_code == "unauthorized"
        assert rt.in_flight("acme", "1.0.0") == 0
        with pytest.raises(packrun.NotFound):
            rt.resolve("nope")
        with pytest.raises(packrun.NotFound):
            rt.install("x", "no-such-pack")


def test_explicit_close__ends_open_runs_is_idempotent_and_refuses_later_calls(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    rt = blocking.open_runtime(url)
    rt.publish(dist("1.0.0"))
    rt.install("acme-prod", "acme")
    scope = rt.run("acme-prod", run_id="left-open", auth=KEY)
    scope.__enter__()  # a run the code never ended
    rt.close()
    rt.close()
    assert rt.closed
    for call in (lambda: rt.resolve("acme-prod"), lambda: rt.installations()):
        with pytest.raises(packrun.InvalidArgument) as refused:
            call()
        assert "an open runtime (this one is closed)" in str(refused.value)
    with blocking.open_runtime(url) as later:
        later.refresh()
        assert later.in_flight("acme", "1.0.0") == 0  # the close ended it in the store


def test_open__a_store_that_cannot_open__raises_store_error_and_leaves_no_thread(
    tmp_path: Path,
) -> None:
    before = threading.active_count()
    with pytest.raises(packrun.StoreError):
        blocking.open_runtime("mysql://db")
    (tmp_path / "not-a-store.db").write_text("hello")
    with pytest.raises(packrun.StoreError):
        blocking.open_runtime(f"sqlite:///{tmp_path / 'not-a-store.db'}")
    deadline = time.monotonic() + 10  # a worker thread of the stopped loop may still be exiting
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before


def test_threads__share_one_runtime__every_run_keeps_its_version_and_is_counted(
    tmp_path: Path,
) -> None:
    threads, runs_each = 8, 15
    with blocking.open_runtime(f"sqlite:///{tmp_path / 'state.db'}") as rt:
        rt.publish(dist("1.0.0"))
        rt.install("acme-prod", "acme")
        start = threading.Barrier(threads + 1)

        def worker(n: int) -> list[tuple[str, str]]:
            start.wait()
            seen = []
            for i in range(runs_each):
                with rt.run("acme-prod", run_id=f"t{n}-{i}", auth=KEY) as run:
                    run.call("list_contacts", {"limit": 1})
                    run.call("list_contacts", {"limit": 1})
                    seen.append((run.version, rt.resolve("acme-prod").version))
            return seen

        def mover() -> None:
            start.wait()
            for version in ("1.0.1", "1.1.0"):
                rt.publish(dist(version))
                rt.update("acme-prod", to=version, actor="ops")

        with ThreadPoolExecutor(threads + 1) as pool:
            results = [pool.submit(worker, n) for n in range(threads)]
            pool.submit(mover).result()
            seen = [pair for r in results for pair in r.result()]
        assert len(seen) == threads * runs_each
        assert {bound for bound, _ in seen} <= {"1.0.0", "1.0.1", "1.1.0"}
        assert rt.stats().runs_started == threads * runs_each
        assert rt.stats().runs_in_flight == 0
        assert rt.resolve("acme-prod").version == "1.1.0"
        assert [e.to_version for e in rt.history("acme-prod")] == ["1.0.0", "1.0.1", "1.1.0"]


def test_postgresql__works_through_the_blocking_runtime(postgres_url: str) -> None:
    with blocking.open_runtime(postgres_url) as rt:
        rt.publish(dist("1.0.0"))
        rt.install("acme-prod", "acme")
        with rt.run("acme-prod", auth=KEY) as run:
            assert run.call("list_contacts", {"limit": 1})["contacts"]
        assert rt.resolve("acme-prod").version == "1.0.0"


def test_the_package__exposes_the_module() -> None:
    assert packrun.blocking.open_runtime is blocking.open_runtime
    assert blocking.BlockingRuntime.publish.__doc__ == packrun.Runtime.publish.__doc__


def test_a_run_that_cannot_start__raises_and_leaves_nothing_open() -> None:
    rt = blocking.open_runtime("memory:")
    try:
        with pytest.raises(packrun.NotFound), rt.run("no-such-installation"):
            pass
        assert rt.stats().runs_in_flight == 0
    finally:
        rt.close()  # returns: no run task is left holding the event loop
    assert rt.closed


def test_open__takes_every_argument_of_packrun_open_runtime() -> None:
    def parameters(fn: object) -> list[tuple[str, object, object]]:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]

    assert parameters(blocking.open_runtime) == parameters(packrun.open_runtime)


def test_open__create_false__refuses_a_missing_store_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "state.db"
    with pytest.raises(packrun.StoreError, match="does not create"):
        blocking.open_runtime(f"sqlite:///{missing}", create=False)
    assert not missing.parent.exists()
    with pytest.raises(packrun.InvalidArgument, match="create"):
        blocking.open_runtime("memory:", create="no")  # type: ignore[arg-type]
    with blocking.open_runtime(f"sqlite:///{missing}"):
        pass  # created by an open that may create it
    with blocking.open_runtime(f"sqlite:///{missing}", create=False) as rt:
        assert rt.installations() == []
