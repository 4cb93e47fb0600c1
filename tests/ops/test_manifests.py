"""Deployment definitions parse and say what they must: prefect.yaml and the Kubernetes manifests.

The manifests are validated in strict mode (unknown fields are errors) against the Kubernetes
OpenAPI schemas that ``kubernetes-validate`` ships (no network). KubeRay's custom resources have no
schema there: their pod templates are validated as core ``PodTemplate`` objects instead.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate as kv
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_prefect_yaml_deployments_reuse_definitions():
    text = (REPO / "prefect.yaml").read_text()
    doc = yaml.safe_load(text)
    deps = {d["name"]: d for d in doc["deployments"]}
    assert set(deps) == {"ingest", "train", "tune", "evaluate", "forecast", "promote", "nightly-retrain"}
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


K8S_VERSION = "1.30.0"  # the oldest Kubernetes these manifests promise to run on


def _documents() -> list[tuple[str, dict[str, Any]]]:
    paths = sorted((REPO / "infra" / "k8s").glob("*.yaml"))
    return [(p.name, d) for p in paths for d in yaml.safe_load_all(p.read_text())]


def _pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates inside a KubeRay RayCluster or RayJob."""
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    return [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]


def _as_pod_template(template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}


def test_kubernetes_manifests_validate_against_the_schemas():
    checked = []
    for name, doc in _documents():
        if doc["kind"] in ("RayCluster", "RayJob"):
            assert doc["apiVersion"] == "ray.io/v1", name
            for template in _pod_templates(doc):
                kv.validate(_as_pod_template(template), K8S_VERSION, strict=True)
        else:
            kv.validate(doc, K8S_VERSION, strict=True)
        checked.append(doc["kind"])
    assert len(checked) >= 11, checked


@pytest.mark.parametrize("breakage", ["misspelled_field", "wrong_type", "ray_template"])
def test_schema_validation_rejects_broken_manifests(breakage: str):
    docs = dict((d["kind"], d) for _, d in _documents())
    if breakage == "ray_template":
        bad = copy.deepcopy(docs["RayCluster"])
        bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = {"always": True}
        target = _as_pod_template(bad["spec"]["headGroupSpec"]["template"])
    else:
        target = copy.deepcopy(docs["Deployment"])
        pod = target["spec"]["template"]["spec"]
        if breakage == "misspelled_field":
            pod["contaners"] = pod.pop("containers")
        else:
            target["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(target, K8S_VERSION, strict=True)
