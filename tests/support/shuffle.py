"""`--shuffle SEED`: run the unit and integration tests in a random order that SEED reproduces, to prove that no
test depends on another having run before it (shared state, leaked environment, a server left changed).

The order of the modules under tests/unit and tests/integration is shuffled, and the tests inside each of
their modules. Each module's tests stay together, so module-scoped fixtures are still set up once; the e2e
modules keep their order (their module fixtures boot vLLM, and regrouping them would boot it again)."""

from __future__ import annotations

import random

import pytest

SHUFFLED_DIRS = ("tests/unit/", "tests/integration/")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shuffle", metavar="SEED", type=int, default=None,
                     help="run unit and integration tests in a random order reproduced by SEED")


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("--shuffle")
    return None if seed is None else f"test order shuffled with seed {seed} (reproduce: --shuffle {seed})"


@pytest.hookimpl(trylast=True)  # after pytest's own grouping by fixture scope
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = config.getoption("--shuffle")
    if seed is None:
        return
    rng = random.Random(seed)
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    shuffled = [m for m in modules if m.startswith(SHUFFLED_DIRS)]
    fixed = [m for m in modules if not m.startswith(SHUFFLED_DIRS)]
    rng.shuffle(shuffled)
    for name in shuffled:
        rng.shuffle(modules[name])
    # unit first, then integration (fast feedback), each in shuffled order; then the rest as collected
    order = sorted(shuffled, key=lambda m: not m.startswith("tests/unit/")) + fixed
    items[:] = [item for name in order for item in modules[name]]
