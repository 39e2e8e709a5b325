"""The --shuffle order: reproducible from its seed, modules kept together, e2e left in place."""

from __future__ import annotations

from types import SimpleNamespace

from tests.support.shuffle import pytest_collection_modifyitems


def items():
    unit = ["gate/test_a", "gate/test_b", "util/test_c", "project/test_d"]  # unit modules sit in subsystem folders
    ids = [f"tests/unit/{m}.py::t{i}" for m in unit for i in range(4)]
    ids += [f"tests/integration/test_{m}.py::t{i}" for m in "xy" for i in range(3)]
    ids += [f"tests/e2e/test_{m}.py::t{i}" for m in "pq" for i in range(2)]
    return [SimpleNamespace(nodeid=i) for i in ids]


def order(seed):
    collected = items()
    config = SimpleNamespace(getoption=lambda name: seed)
    pytest_collection_modifyitems(config, collected)
    return [i.nodeid for i in collected]


def test_same_seed_same_order_and_another_seed_another():
    assert order(5) == order(5)
    assert order(5) != order(6)
    assert order(None) == [i.nodeid for i in items()]


def test_every_test_runs_once_modules_stay_together_unit_first_e2e_last_in_place():
    shuffled = order(11)
    assert sorted(shuffled) == sorted(i.nodeid for i in items())
    modules = [n.split("::")[0] for n in shuffled]
    runs = [m for k, m in enumerate(modules) if k == 0 or modules[k - 1] != m]
    assert len(runs) == len(set(runs)), "a module's tests were split"
    kinds = [m.split("/")[1] for m in runs]
    assert kinds == sorted(kinds, key=["unit", "integration", "e2e"].index)
    assert shuffled[-4:] == [i.nodeid for i in items()][-4:]
    assert any(order(s)[:16] != order(11)[:16] for s in range(3))
