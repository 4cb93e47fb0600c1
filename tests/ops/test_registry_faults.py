"""MLflow server down at promotion time: the alias is never half-moved and the error says where it points."""

from __future__ import annotations

import os
import signal

import pytest

from infra.stack import free_ports
from predrnn.tracking.registry import RegistryError, current_champion, promote

pytestmark = [pytest.mark.slow, pytest.mark.mlflow]


def _versions(uri: str, *mses: float) -> list[int]:
    from mlflow import MlflowClient

    client = MlflowClient(uri, uri)
    client.create_registered_model("m")
    return [int(client.create_model_version("m", "s3://placeholder/model", tags={"test_mse": str(v),
                                                                              "test_persistence_mse": "99",
                                                                              "dataset": "d@1"}).version)
            for v in mses]


def test_server_dies_during_the_alias_move(mlflow_only, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.store.model_registry.rest_store import RestStore

    from predrnn.settings import Settings

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = mlflow_only.s.mlflow_url
    promoter = Settings().promoter()  # only the promoter moves @champion on this server
    v1, v2 = _versions(uri, 10.0, 5.0)
    with pytest.raises(RegistryError, match="403|PERMISSION_DENIED|promoter"):
        promote("m", v1, tracking_uri=uri)  # as the pipeline's account: refused by the server, nothing moved
    assert current_champion("m", tracking_uri=uri) is None
    assert promote("m", v1, tracking_uri=uri, promoter=promoter).promoted

    original = RestStore.set_registered_model_alias
    pgid = mlflow_only.read_state()["services"]["mlflow"]["pgid"]

    def dies_first(self, name, alias, version):  # the server goes away between the tags and the move
        if version == str(v2):
            os.killpg(pgid, signal.SIGKILL)
        return original(self, name, alias, version)

    monkeypatch.setattr(RestStore, "set_registered_model_alias", dies_first)
    with pytest.raises(RegistryError, match=r"moving 'champion' of 'm' to version 2 failed.*could not restore"):
        promote("m", v2, tracking_uri=uri, promoter=promoter)
    monkeypatch.setattr(RestStore, "set_registered_model_alias", original)

    mlflow_only.down(echo=lambda _m: None)
    mlflow_only.up(echo=lambda _m: None)  # same database
    assert current_champion("m", tracking_uri=uri) == v1
    tags = MlflowClient(uri, uri).get_model_version("m", str(v2)).tags
    assert tags["promotion.decision"] == "pending"  # the store was down: not even "failed" could be written
    assert not promote("m", v1, tracking_uri=uri, promoter=promoter).promoted  # the next promotion settles it
    tags = MlflowClient(uri, uri).get_model_version("m", str(v2)).tags
    assert tags["promotion.decision"] == "failed"
    assert tags["promotion.error"] == ("the promotion was interrupted before the 'champion' alias moved (store "
                                       "unreachable); champion stayed v1")

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert promote("m", v2, tracking_uri=uri, promoter=promoter).promoted  # the server is back: the move goes through
    assert current_champion("m", tracking_uri=uri) == v2
    assert MlflowClient(uri, uri).get_model_version("m", str(v2)).tags["promotion.decision"] == "promoted"


def test_server_down_before_promotion():
    uri = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    with pytest.raises(RegistryError, match="not started.*unreachable"):
        promote("m", 1, tracking_uri=uri)
