"""MLflow's errors, mapped once at the boundary: whatever a call to the tracking store or the registry raises
(MlflowException, an HTTP transport error from requests, OSError from a file store) becomes an InfraError
(exit 3) saying what was being done, the error's type and its first words:

    with mlflow_errors(f"MLflow at {display_uri(uri)}: reading the audit trail failed"):
        client.search_runs(...)

Everything that talks to MLflow uses it (tracking, registry, the audit trail, history); mlflow is imported
only when an error is being mapped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.errors import InfraError


def error_types() -> tuple[type[BaseException], ...]:
    """What a call to MLflow raises when the store fails or refuses."""
    from mlflow.exceptions import MlflowException

    try:
        import requests
    except ImportError:  # pragma: no cover
        return (MlflowException, OSError)
    return (MlflowException, requests.RequestException, OSError)


def is_not_found(exc: BaseException) -> bool:
    """True for MLflow's "no such model, version, alias or run" (RESOURCE_DOES_NOT_EXIST)."""
    code = str(getattr(exc, "error_code", ""))
    return "RESOURCE_DOES_NOT_EXIST" in code or "not found" in str(exc).lower()


def describe(exc: BaseException, detail: int = 300) -> str:
    """'ConnectionError: first `detail` characters of the message on one line'; the type alone when
    `detail` is 0."""
    if not detail:
        return type(exc).__name__
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:detail]}"


@contextmanager
def mlflow_errors(failed: str, *, detail: int = 300) -> Iterator[None]:
    """Re-raise MLflow's errors inside the block as InfraError(f"{failed}: {describe(exc, detail)}")."""
    try:
        yield
    except InfraError:
        raise
    except Exception as exc:  # noqa: BLE001 - narrowed below: only MLflow's errors are mapped
        if not isinstance(exc, error_types()):
            raise
        raise InfraError(f"{failed}: {describe(exc, detail)}") from exc
