"""Fixture wiring only: the helpers and fixtures live in tests/support/ (an importable package)."""

pytest_plugins = ["tests.support.fixtures", "tests.support.ghfake.fixtures", "tests.support.shuffle",
                  "tests.support.module_times"]
