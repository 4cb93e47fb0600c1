"""Deployment definitions parse and say what they must: prefect.yaml and the Kubernetes manifests."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_prefect_yaml_deployments_reuse_definitions():
    text = (REPO / "prefect.yaml").read_text()
    doc = yaml.safe_load(text)
    deps = {d["name"]: d for d in doc["deployments"]}
    assert set(deps) == {"ingest", "train", "tune", "evaluate", "promote", "nightly-retrain"}
    assert "*local_pool" in text and "*nightly_0200" in text  # anchors, not copies
    for d in deps.values():
        path, func = d["entrypoint"].split(":")
        assert (REPO / path).is_file() or d["name"] == "tune", d["entrypoint"]
        assert d["work_pool"]["name"] == "local-process"
    nightly = deps["nightly-retrain"]
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"
    assert nightly["schedules"][0]["timezone"] == "{{ $PREDRNN_TIMEZONE }}"
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


def test_kubernetes_manifests_parse_with_the_expected_kinds():
    kinds: dict[str, dict] = {}
    for path in sorted((REPO / "infra" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["metadata"]["name"], path
            assert doc["metadata"].get("namespace") == "predrnn", path
            kinds.setdefault(doc["kind"], doc)
    assert {"RayCluster", "RayJob", "Deployment", "StatefulSet", "Service", "Role", "ConfigMap"} <= set(kinds)
    head = kinds["RayCluster"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] and kinds["RayCluster"]["spec"]["workerGroupSpecs"][0]["maxReplicas"] >= 1
    assert "predrnn train" in kinds["RayJob"]["spec"]["entrypoint"]
    text = (REPO / "infra" / "k8s" / "mlflow.yaml").read_text()
    assert "postgresql://" in text and "s3://" in text and "MLFLOW_SERVER_ENABLE_JOB_EXECUTION" in text
    worker = (REPO / "infra" / "k8s" / "prefect-worker.yaml").read_text()
    assert "--type, kubernetes" in worker
