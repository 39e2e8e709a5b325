"""Fixture wiring for the real stack: every test here starts by noting the vLLM processes already alive."""

import pytest


@pytest.fixture(autouse=True)
def _vllm_processes_before_the_test(no_new_vllm_before):
    yield
