"""Soak and update windows: an auto policy takes a version only once it is ``min_release_age`` old
and only inside its update window; the time passing is enough (the runtime applies its policies
again when the earliest such time is due). Time is an injected clock, never a sleep."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import packrun
from packrun import InvalidArgument, Runtime, UpdateWindow

pytestmark = pytest.mark.anyio

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
DAY = 86400.0


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def opened(url: str, clock: Callable[[], datetime]) -> Runtime:
    return packrun.open_runtime(url, clock=clock, refresh_interval=0)


def published(rt: Runtime, version: str) -> datetime:
    return next(e.published_at for e in rt.versions("acme") if str(e.version) == version)


async def test_a_soaking_version__is_taken_once_old_enough__with_no_other_event(
    store_url: str,
) -> None:
    clock = Clock()
    async with opened(store_url, clock) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.install("crm", "acme", pin="1.0.0")
        await rt.set_policy("crm", "auto_patch", min_release_age=DAY)
        await rt.publish(dist("1.0.1"))
        assert rt.resolve("crm").version == "1.0.0"
        until = published(rt, "1.0.1") + timedelta(days=1)
        why = rt.explain("crm")
        assert why.update_available is not None
        assert why.update_available.blocked == "soaking"
        assert why.update_available.soaking_until == until
        assert why.soaking
        assert "soaking until" in why.soaking[0]
        assert "soaking: 1.0.1: soaking until" in str(why)
        review = rt.review_update("crm")
        assert review.soaking_until == until
        assert "soaking until" in str(review)
        clock.now = until - timedelta(seconds=1)
        await rt.refresh()
        assert rt.resolve("crm").version == "1.0.0"
        clock.now = until
        await rt.refresh()  # what the refresh loop does on its own
        assert rt.resolve("crm").version == "1.0.1"
        last = (await rt.history("crm"))[-1]
        assert (last.origin, last.to_version) == ("policy", "1.0.1")
        assert rt.explain("crm").soaking == ()


async def test_a_young_version__is_passed_over_for_an_older_one_old_enough(
    store_url: str,
) -> None:
    clock = Clock()
    async with opened(store_url, clock) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.install("crm", "acme", pin="1.0.0")
        await rt.set_policy("crm", "auto_minor", min_release_age=DAY)
        await rt.publish(dist("1.0.1"))
        await rt.publish(dist("1.1.0"))
        first, second = published(rt, "1.0.1"), published(rt, "1.1.0")
        assert first < second
        clock.now = first + timedelta(days=1) + (second - first) / 2
        await rt.refresh()
        assert rt.resolve("crm").version == "1.0.1"
        assert [s.split(":")[0] for s in rt.explain("crm").soaking] == ["1.1.0"]
        clock.now = second + timedelta(days=1)
        await rt.refresh()
        assert rt.resolve("crm").version == "1.1.0"


async def test_outside_the_project_window__policies_wait__and_move_when_it_opens(
    store_url: str,
) -> None:
    now = datetime.now(UTC)
    wednesday = (now + timedelta(days=(2 - now.weekday()) % 7 + 7)).replace(
        hour=12, minute=0, second=0, microsecond=0
    )
    clock = Clock(wednesday)
    async with opened(store_url, clock) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.install("crm", "acme", pin="1.0.0", policy="auto_patch")
        await rt.set_project_soak(window="sat,sun 00:00-24:00")
        assert rt.soak_of("crm").window == UpdateWindow.parse("sat,sun 00:00-24:00")
        await rt.publish(dist("1.0.1"))
        assert rt.resolve("crm").version == "1.0.0"
        saturday = wednesday.replace(hour=0) + timedelta(days=3)
        [waiting] = rt.explain("crm").soaking
        assert "outside the update window sat,sun 00:00-24:00" in waiting
        assert saturday.strftime("%Y-%m-%d 00:00:00 UTC") in waiting
        assert rt.explain("crm").update_available.blocked == "window"  # type: ignore[union-attr]
        clock.now = saturday - timedelta(seconds=1)
        await rt.refresh()
        assert rt.resolve("crm").version == "1.0.0"
        clock.now = saturday
        await rt.refresh()
        assert rt.resolve("crm").version == "1.0.1"


async def test_an_installation_soak__wins_over_the_project_soak__and_set_policy_resets_it(
    store_url: str,
) -> None:
    async with opened(store_url, Clock()) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.install("crm", "acme", pin="1.0.0")
        await rt.set_project_soak(3 * DAY, window="22:00-04:00")
        await rt.set_policy("crm", "auto_patch", min_release_age=DAY)
        soak = rt.soak_of("crm")
        assert (soak.min_release_age, str(soak.window)) == (DAY, "22:00-04:00")
        await rt.set_policy("crm", "auto_patch")
        assert rt.soak_of("crm").min_release_age == 3 * DAY
        assert rt.project_soak().describe() == "min_release_age 3d, update window 22:00-04:00 (UTC)"


async def test_soak_settings__are_shared_by_the_runtimes_of_a_store(shared_url: str) -> None:
    clock = Clock()
    async with opened(shared_url, clock) as one, opened(shared_url, clock) as two:
        await one.publish(dist("1.0.0"))
        await one.install("crm", "acme", pin="1.0.0")
        await one.set_policy("crm", "auto_patch", min_release_age=DAY)
        await one.set_project_soak(window="mon-fri 02:00-06:00", project="acme-corp")
        await two.refresh()
        assert two.soak_of("crm").min_release_age == DAY
        assert str(two.project_soak("acme-corp").window) == "mon-fri 02:00-06:00"
    later = Clock(clock.now + timedelta(days=2))
    async with opened(shared_url, clock) as rt:
        await rt.publish(dist("1.0.1"))
        assert rt.resolve("crm").version == "1.0.0"
    async with opened(shared_url, later) as rt:  # soaked while no runtime was open
        await rt.refresh()
        assert rt.resolve("crm").version == "1.0.1"


WINDOWS = [
    # window, a time (weekday of 2027-01-04 is Monday), inside?
    ("mon-fri 02:00-06:00", "2027-01-06T03:00", True),
    ("mon-fri 02:00-06:00", "2027-01-06T06:00", False),
    ("mon-fri 02:00-06:00", "2027-01-09T03:00", False),
    ("22:00-04:00", "2027-01-06T23:00", True),
    ("22:00-04:00", "2027-01-06T03:59", True),
    ("22:00-04:00", "2027-01-06T04:00", False),
    ("fri 22:00-02:00", "2027-01-09T01:00", True),
    ("fri 22:00-02:00", "2027-01-09T23:00", False),
    ("sat,sun 00:00-24:00", "2027-01-10T23:59", True),
    ("fri-mon 10:00-11:00", "2027-01-04T10:30", True),
    ("fri-mon 10:00-11:00", "2027-01-05T10:30", False),
]


@pytest.mark.parametrize(("text", "at", "inside"), WINDOWS)
def test_update_window__contains(text: str, at: str, inside: bool) -> None:
    when = datetime.fromisoformat(at).replace(tzinfo=UTC)
    window = UpdateWindow.parse(text)
    assert window._contains(when) is inside
    opens = window._next_open(when)
    assert (opens == when) is inside
    assert window._contains(opens)
    assert str(window) == text


@pytest.mark.parametrize(
    "text", ["", "always", "mon 2:00-6:00", "xyz 02:00-06:00", "25:00-26:00", "02:00-24:01"]
)
def test_update_window__bad_text__is_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument, match="update window"):
        UpdateWindow.parse(text)


async def test_min_release_age__out_of_range__is_invalid_argument() -> None:
    async with opened("memory:", Clock()) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.install("crm", "acme", pin="1.0.0")
        for bad in (-1, 400 * DAY, float("nan"), True, "1d"):
            with pytest.raises(InvalidArgument, match="min_release_age"):
                await rt.set_policy("crm", "auto_patch", min_release_age=bad)  # type: ignore[arg-type]


async def test_the_refresh_loop__takes_a_soaked_version_on_its_own() -> None:
    clock = Clock()
    async with packrun.open_runtime("memory:", clock=clock, refresh_interval=0.01) as rt:
        await rt.publish(dist("1.0.0"))
        await rt.install("crm", "acme", pin="1.0.0")
        await rt.set_policy("crm", "auto_patch", min_release_age=DAY)
        await rt.publish(dist("1.0.1"))
        assert rt.resolve("crm").version == "1.0.0"
        clock.now = published(rt, "1.0.1") + timedelta(days=1)
        with anyio.fail_after(30):  # no call here: the background loop moves it
            while rt.resolve("crm").version != "1.0.1":
                await anyio.sleep(0.01)
        assert (await rt.history("crm"))[-1].origin == "policy"
