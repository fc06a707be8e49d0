"""Fleet health: what every runtime counted of each ``(pack, version, project)``, added up.

Each runtime counts its own calls in :class:`~packrun._checks.HealthCounters` (plain integers on
the event loop: no lock, no I/O per call). Every ``fleet_interval`` seconds its background loop
writes what grew since the last write to the store (the store keeps one sum per key and metric)
and reads the fleet's sums back. :meth:`HealthBook.figures` answers from that read plus what this
runtime counted since: its own calls at once, other runtimes' within about two intervals.

When ``opentelemetry-api`` is installed (the ``otel`` extra), :func:`instrument` exports the same
counters as OpenTelemetry metrics: each process reports its own counts, the collector adds them.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Final

from packrun._checks import LATENCY_BOUNDS, HealthCounters, VersionHealth
from packrun._stores import HealthDelta, Store

__all__ = ["METRICS", "HealthBook", "HealthKey", "instrument"]

HealthKey = tuple[str, str, str, str]
"""``(pack, stream, version key, project)``: one catalog row, as used by one project."""

METRICS: Final[tuple[str, ...]] = (
    "calls",
    "tool_errors",
    "timeouts",
    "crashes",
    "invalid_input",
    "invalid_output",
    *(f"latency_{i}" for i in range(len(LATENCY_BOUNDS) + 1)),
)
_INDEX: Final = {m: i for i, m in enumerate(METRICS)}
_FIRST_BUCKET: Final = METRICS.index("latency_0")


def _zeros() -> list[int]:
    return [0] * len(METRICS)


def _percentile(buckets: list[int], q: float) -> float | None:
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= q * total:
            return LATENCY_BOUNDS[min(i, len(LATENCY_BOUNDS) - 1)]
    return LATENCY_BOUNDS[-1]  # pragma: no cover - the loop always reaches q * total


class HealthBook:
    """One runtime's health counters, what it wrote of them, and the fleet's sums it last read."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        """Whether this runtime counts calls (``count_health``)."""
        self.counters: dict[HealthKey, HealthCounters] = {}
        self._written: dict[HealthKey, list[int]] = {}  # what reached the store
        self._fleet: dict[HealthKey, list[int]] = {}  # the fleet's sums as last read
        self._read_base: dict[HealthKey, list[int]] = {}  # _written when they were read

    def counters_for(self, key: HealthKey) -> HealthCounters:
        counters = self.counters.get(key)
        if counters is None:
            counters = self.counters[key] = HealthCounters()
        return counters

    async def flush(self, store: Store) -> None:
        """Write what grew since the last flush, then read the fleet's sums."""
        sent: dict[HealthKey, list[int]] = {}
        deltas: list[HealthDelta] = []
        for key, counters in list(self.counters.items()):
            before = self._written.get(key) or _zeros()
            grown = [now - then for now, then in zip(counters.values(), before, strict=True)]
            if any(grown):
                sent[key] = grown
                deltas.extend((*key, METRICS[i], n) for i, n in enumerate(grown) if n)
        if deltas:
            await store.add_health(deltas)
            for key, grown in sent.items():  # counters may have grown meanwhile: add what was sent
                written = self._written.setdefault(key, _zeros())
                for i, n in enumerate(grown):
                    written[i] += n
        rows = await store.health_rows()
        fleet: dict[HealthKey, list[int]] = {}
        for pack, stream, vkey, project, metric, n in rows:
            index = _INDEX.get(metric)
            if index is not None:  # a metric of a later release: not ours to show
                fleet.setdefault((pack, stream, vkey, project), _zeros())[index] += n
        self._fleet = fleet
        self._read_base = {k: list(v) for k, v in self._written.items()}

    def _values(self, key: HealthKey) -> list[int]:
        values = list(self._fleet.get(key) or _zeros())
        counters = self.counters.get(key)
        if counters is not None:  # this runtime's own counts since the fleet's were read
            base = self._read_base.get(key) or _zeros()
            for i, (now, then) in enumerate(zip(counters.values(), base, strict=True)):
                values[i] += now - then
        return values

    def figures(
        self,
        pack_id: str,
        version: str,
        stream: str,
        vkey: str,
        project: str | None,
        channel: Any,
    ) -> VersionHealth:
        """The fleet's figures of one row: of ``project``'s installations, or of every project's
        (``None``)."""
        keys = {
            k
            for k in (*self._fleet, *self.counters)
            if k[0] == pack_id
            and k[1] == stream
            and k[2] == vkey
            and (project is None or k[3] == project)
        }
        total = _zeros()
        for key in keys:
            for i, n in enumerate(self._values(key)):
                total[i] += n
        return _health(pack_id, version, channel, project, total)

    def local(self) -> Iterator[tuple[HealthKey, list[int]]]:
        """This runtime's own counters (what OpenTelemetry exports)."""
        for key, counters in list(self.counters.items()):
            yield key, counters.values()


def _health(
    pack_id: str, version: str, channel: Any, project: str | None, v: list[int]
) -> VersionHealth:
    buckets = v[_FIRST_BUCKET:]
    return VersionHealth(
        pack_id,
        version,
        calls=v[0],
        invalid_input=v[4],
        invalid_output=v[5],
        channel=channel,
        tool_errors=v[1],
        timeouts=v[2],
        crashes=v[3],
        p50=_percentile(buckets, 0.5),
        p99=_percentile(buckets, 0.99),
        project=project,
    )


class _Exported:
    """The books of this process's open runtimes that export to the global meter provider: one
    set of instruments for all of them, registered with the first."""

    def __init__(self) -> None:
        self.books: weakref.WeakSet[HealthBook] = weakref.WeakSet()
        self.registered = False


_EXPORTED = _Exported()


def instrument(book: HealthBook, meter_provider: Any = None) -> bool:
    """Export ``book``'s counters as OpenTelemetry metrics (observable counters named
    ``packrun.calls``, ``packrun.tool_errors``, ...; and ``packrun.call.latency`` per bucket),
    with attributes ``pack``, ``stream``, ``version`` and ``project``. ``False`` when
    ``opentelemetry-api`` is not installed. Without ``meter_provider``, on the global one (the
    instruments registered once per process, summing its open runtimes' counts)."""
    try:
        from opentelemetry import metrics
    except ImportError:
        return False
    if meter_provider is None:
        _EXPORTED.books.add(book)
        if _EXPORTED.registered:
            return True
        _EXPORTED.registered = True
        provider = metrics.get_meter_provider()

        def books() -> list[HealthBook]:
            return list(_EXPORTED.books)

    else:
        provider = meter_provider
        ref = weakref.ref(book)  # the instruments outlive a closed runtime: they must not keep it

        def books() -> list[HealthBook]:
            held = ref()
            return [] if held is None else [held]

    meter = provider.get_meter("packrun")

    def totals() -> dict[HealthKey, list[int]]:
        summed: dict[HealthKey, list[int]] = {}
        for held in books():
            for key, values in held.local():
                into = summed.setdefault(key, _zeros())
                for i, n in enumerate(values):
                    into[i] += n
        return summed

    def observe(index: int) -> Any:
        def callback(options: Any) -> Iterable[Any]:
            return [
                metrics.Observation(values[index], _attributes(key))
                for key, values in totals().items()
                if values[index]
            ]

        return callback

    for name in METRICS[:_FIRST_BUCKET]:
        meter.create_observable_counter(
            f"packrun.{name}", callbacks=[observe(_INDEX[name])], unit="1"
        )

    def latency(options: Any) -> Iterable[Any]:
        out = []
        for key, values in totals().items():
            for i, bound in enumerate((*LATENCY_BOUNDS, float("inf"))):
                n = values[_FIRST_BUCKET + i]
                if n:
                    out.append(metrics.Observation(n, {**_attributes(key), "le": bound}))
        return out

    meter.create_observable_counter(
        "packrun.call.latency",
        callbacks=[latency],
        unit="1",
        description="calls by latency bucket (le: the bucket's upper bound in seconds)",
    )
    return True


def _attributes(key: HealthKey) -> dict[str, str]:
    pack, stream, vkey, project = key
    return {"pack": pack, "stream": stream, "version": vkey, "project": project}
