"""MLflow's errors are mapped once, at the integrations boundary: an InfraError saying what failed, the
error's type and its first words; other errors pass through untouched."""

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from pipeline.errors import InfraError
from pipeline.integrations.mlflow_errors import is_not_found, mlflow_errors


def test_mlflow_and_os_errors_become_infra_errors():
    with pytest.raises(InfraError, match=r"^MLflow at x: reading failed: MlflowException: no\s+luck$"):
        with mlflow_errors("MLflow at x: reading failed"):
            raise MlflowException("no\n  luck")
    with pytest.raises(InfraError, match=r"^uploading r.json failed: PermissionError$"):
        with mlflow_errors("uploading r.json failed", detail=0):
            raise PermissionError("denied")


def test_other_errors_pass_through():
    with pytest.raises(KeyError), mlflow_errors("never"):
        raise KeyError("a bug is not the store's failure")


def test_not_found():
    assert is_not_found(MlflowException("x", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not is_not_found(MlflowException("the store is on fire"))
