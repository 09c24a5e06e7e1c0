"""The fault suite (``make reliability``; not part of ``make test``).

Each scenario module names what it injects and asserts in ``SCENARIO``; the
``report`` fixture collects its figures and, whatever the outcome, leaves them in
``.mds/reliability/NN.json`` for ``scripts/reliability_report.py``.
"""

from __future__ import annotations

import resource
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import PrivateRedis
from tests.support.reliability import ScenarioReport

OUTCOME = pytest.StashKey[str]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.failed):
        item.stash[OUTCOME] = report.outcome
    return report


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[ScenarioReport]:
    template: ScenarioReport = request.module.SCENARIO
    scenario = ScenarioReport(template.number, template.name, template.injected, template.asserted)
    yield scenario
    scenario.write(request.node.stash.get(OUTCOME, "error"))


@pytest.fixture(scope="session", autouse=True)
def enough_file_descriptors() -> None:
    """Hundreds of streams (each a socket here and one in the server) need descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the scenario's own (its port, its folder), stopped after it."""
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()
