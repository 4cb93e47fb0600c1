"""Deployment definitions parse and say what they must: prefect.yaml and the Kubernetes manifests.

The manifests are validated in strict mode (unknown fields are errors) against the Kubernetes
OpenAPI schemas that ``kubernetes-validate`` ships (no network). KubeRay's custom resources have no
schema there: their pod templates are validated as core ``PodTemplate`` objects instead.

The authentication they set up is pinned too (Ray token auth through KubeRay's ``authOptions``, MLflow's
auth app and accounts Job, who gets which credential, no secret value in any manifest), and every such check
is shown to reject a copy of the manifests broken on purpose.
"""

from __future__ import annotations

import configparser
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
    assert set(deps) == {"ingest", "train", "tune", "evaluate", "forecast", "promote", "nightly-retrain",
                         "nightly-retrain-small", "nowcast"}
    assert "*local_pool" in text and "*nightly_0200" in text  # anchors, not copies
    for d in deps.values():
        path, func = d["entrypoint"].split(":")
        assert (REPO / path).is_file() or d["name"] == "tune", d["entrypoint"]
        assert d["work_pool"]["name"] == "local-process"
    nightly = deps["nightly-retrain"]
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"
    assert nightly["schedules"][0]["timezone"] == "{{ $PREDRNN_TIMEZONE }}"
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    from flows.nightly import nightly_retrain

    small = deps["nightly-retrain-small"]  # the laptop-sized nightly: the same flow and schedule, switched off
    assert small["schedules"] == [{**nightly["schedules"][0], "active": False}]
    assert small["parameters"]["workers"] == 1 and "optim.max_iterations=8" in small["parameters"]["overrides"]
    for d in (nightly, small):  # every parameter the flow takes, so scheduled runs can be pointed at any data
        assert set(d["parameters"]) <= set(nightly_retrain.parameters.properties), d["name"]
    assert {"source", "source_options", "preset", "overrides", "workers", "metric", "margin"} <= set(
        nightly["parameters"])
    nowcast = deps["nowcast"]  # every radar step, one at a time; off until pointed at a feed
    assert nowcast["schedules"] == [{"interval": 300, "anchor_date": "2026-01-01T00:01:00+00:00", "active": False}]
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule

    made = _schedule_config_to_deployment_schedule(dict(nowcast["schedules"][0]))  # as `prefect deploy` reads it
    assert made["schedule"].interval.total_seconds() == 300 and made["schedule"].anchor_date.minute == 1
    assert made["active"] is False
    assert nowcast["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    from flows.nowcast import nowcast_flow

    assert set(nowcast["parameters"]) <= set(nowcast_flow.parameters.properties)


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


# --- authentication: every service authenticates its callers, and no manifest holds a secret value ---------------

SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "AUTH_STRING")  # an env var named so is a credential
RAY_TOKEN_SECRET = "predrnn-ray-auth"  # spec.authOptions.secretName of the Ray clusters
RAY_TOKEN_KEY = "auth_token"  # the key KubeRay reads in it (RAY_AUTH_TOKEN_SECRET_KEY)
MLFLOW_AUTH_SECRET = "predrnn-mlflow-auth"
PIPELINE_SECRET = "predrnn-mlflow-pipeline"
PROMOTER_SECRET = "predrnn-mlflow-promoter"
PREFECT_AUTH_SECRET = "predrnn-prefect-auth"
NOT_FOR_RAY = ("PREDRNN_PROMOTER_USERNAME", "PREDRNN_PROMOTER_PASSWORD", "PREFECT_API_AUTH_STRING")
# what `python -m infra.mlflow_accounts` refuses to start without (pinned against its main() below)
ACCOUNTS_REQUIRED = ("MLFLOW_TRACKING_URI", "MLFLOW_AUTH_ADMIN_PASSWORD", "PREDRNN_PIPELINE_PASSWORD",
                     "PREDRNN_PROMOTER_PASSWORD")


def _docs() -> list[dict[str, Any]]:
    return [d for _, d in _documents()]


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} documents"
    return found[0]


def _ray_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("RayCluster", "RayJob")]


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container (init containers and KubeRay's autoscaler options included) a document starts."""
    if doc["kind"] in ("RayCluster", "RayJob"):
        templates = _pod_templates(doc)
        if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
            templates.append(doc["spec"]["submitterPodTemplate"])
        extra = [_cluster_spec(doc).get("autoscalerOptions") or {}]
    elif doc["kind"] == "CronJob":
        templates, extra = [doc["spec"]["jobTemplate"]["spec"]["template"]], []
    elif "template" in doc.get("spec", {}):
        templates, extra = [doc["spec"]["template"]], []
    else:
        return []
    pods = [t["spec"] for t in templates]
    return [c for p in pods for c in (*p.get("initContainers", []), *p["containers"])] + extra


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _from_secret(container: dict[str, Any], name: str) -> tuple[str, str]:
    """(Secret, key) that env var ``name`` of ``container`` comes from; fails on a literal value."""
    entry = _env(container).get(name)
    assert entry is not None, f"{container['name']}: no env {name}"
    assert "value" not in entry, f"{container['name']}: {name} has a literal value"
    ref = entry.get("valueFrom", {}).get("secretKeyRef")
    assert ref, f"{container['name']}: {name} does not come from a Secret"
    return ref["name"], ref["key"]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def _check_ray_token_auth(docs: list[dict[str, Any]]) -> None:
    ray = _ray_docs(docs)
    assert {d["kind"] for d in ray} == {"RayCluster", "RayJob"}, [d["kind"] for d in ray]
    for doc in ray:
        spec, where = _cluster_spec(doc), f"{doc['kind']}/{doc['metadata']['name']}"
        assert _version(spec["rayVersion"]) >= (2, 52), f"{where}: token auth needs Ray >= 2.52"
        # KubeRay's mechanism: the operator injects RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (from this Secret,
        # key auth_token) into every Ray container; K8s-delegated auth is another mode, not supported on RayJob
        assert spec.get("authOptions") == {"mode": "token", "secretName": RAY_TOKEN_SECRET}, where
        for container in _containers(doc):
            own = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(_env(container))
            assert not own, f"{where}/{container.get('name')}: {own} set in the template overrides the operator's"


def _check_mlflow_server_auth(docs: list[dict[str, Any]]) -> None:
    deployment = _named(docs, "Deployment", "mlflow")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["command"][:2] == ["sh", "-c"] and "args" not in server, server["command"]
    command = " ".join(server["command"][2].split())  # the shell script, on one line
    assert "exec mlflow server" in command and "--app-name predrnn-auth" in command, command
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert _from_secret(server, name) == (MLFLOW_AUTH_SECRET, name)
    # the ini: MLflow's settings from a ConfigMap, written with the Postgres URL at start into a private emptyDir
    config_path = _env(server)["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    assert command.startswith("umask 077 ") and '> "$MLFLOW_AUTH_CONFIG_PATH"' in command, command
    assert "database_uri = postgresql://" in command and '"$POSTGRES_PASSWORD"' in command, command
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in server["volumeMounts"]}
    assert "emptyDir" in mounts[str(Path(config_path).parent)], mounts
    (settings,) = [v["configMap"]["name"] for v in mounts.values() if "configMap" in v]
    ini = configparser.ConfigParser()
    ini.read_string("".join(_named(docs, "ConfigMap", settings)["data"].values()))
    assert ini["mlflow"]["default_permission"] == "READ" and ini["mlflow"]["admin_username"] == "admin"
    assert ini["mlflow"]["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    assert not ini.getboolean("mlflow", "grant_default_workspace_access")
    assert not {"database_uri", "admin_password"} & set(ini["mlflow"]), "the ConfigMap would hold a password"


def _check_accounts_job(docs: list[dict[str, Any]]) -> None:
    jobs = [(d, c) for d in docs if d["kind"] == "Job" for c in _containers(d)
            if "infra.mlflow_accounts" in " ".join(c.get("command", []) + c.get("args", []))]
    assert len(jobs) == 1, "no Job (or more than one) runs python -m infra.mlflow_accounts"
    job, accounts = jobs[0]
    assert accounts["command"] == ["python", "-m", "infra.mlflow_accounts"], accounts["command"]
    assert job["metadata"]["namespace"] == "predrnn" and accounts["image"].startswith("ghcr.io/example/predrnn:")
    env = _env(accounts)
    assert set(ACCOUNTS_REQUIRED) <= set(env), set(ACCOUNTS_REQUIRED) - set(env)
    endpoints = _named(docs, "ConfigMap", "predrnn-endpoints")["data"]
    assert env["MLFLOW_TRACKING_URI"]["value"] == endpoints["MLFLOW_TRACKING_URI"]
    assert _from_secret(accounts, "MLFLOW_AUTH_ADMIN_PASSWORD") == (MLFLOW_AUTH_SECRET, "MLFLOW_AUTH_ADMIN_PASSWORD")
    assert _from_secret(accounts, "MLFLOW_TRACKING_USERNAME") == (PIPELINE_SECRET, "MLFLOW_TRACKING_USERNAME")
    assert _from_secret(accounts, "PREDRNN_PIPELINE_PASSWORD") == (PIPELINE_SECRET, "MLFLOW_TRACKING_PASSWORD")
    assert _from_secret(accounts, "PREDRNN_PROMOTER_USERNAME") == (PROMOTER_SECRET, "PREDRNN_PROMOTER_USERNAME")
    assert _from_secret(accounts, "PREDRNN_PROMOTER_PASSWORD") == (PROMOTER_SECRET, "PREDRNN_PROMOTER_PASSWORD")


def _check_worker_credentials(docs: list[dict[str, Any]]) -> None:
    (worker,) = _named(docs, "Deployment", "prefect-worker")["spec"]["template"]["spec"]["containers"]
    assert _from_secret(worker, "PREFECT_API_AUTH_STRING") == (PREFECT_AUTH_SECRET, "PREFECT_API_AUTH_STRING")
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert _from_secret(worker, name) == (PIPELINE_SECRET, name)
    for name in ("PREDRNN_PROMOTER_USERNAME", "PREDRNN_PROMOTER_PASSWORD"):
        assert _from_secret(worker, name) == (PROMOTER_SECRET, name)
    # the flow runs reach the RayCluster at PREDRNN_RAY_ADDRESS with that cluster's token
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert _env(worker).get("RAY_AUTH_MODE", {}).get("value") == "token"
    assert _from_secret(worker, "RAY_AUTH_TOKEN") == (cluster["spec"]["authOptions"]["secretName"], RAY_TOKEN_KEY)


def _check_ray_pods_credentials(docs: list[dict[str, Any]]) -> None:
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    for doc in _ray_docs(docs):
        for template in _pod_templates(doc):
            ray, *_ = template["spec"]["containers"]
            # training logs runs and registers versions: the pipeline's account
            assert _from_secret(ray, "MLFLOW_TRACKING_PASSWORD") == (PIPELINE_SECRET, "MLFLOW_TRACKING_PASSWORD")
        for container in _containers(doc):
            where = f"{doc['metadata']['name']}/{container.get('name')}"
            assert not set(NOT_FOR_RAY) & set(_env(container)), where
            for source in container.get("envFrom", []):
                assert source.get("secretRef", {}).get("name") not in (PROMOTER_SECRET, PREFECT_AUTH_SECRET), where
                if "configMapRef" in source:
                    assert not set(NOT_FOR_RAY) & set(config_maps.get(source["configMapRef"]["name"], {})), where


def _check_no_literal_secrets(docs: list[dict[str, Any]]) -> None:
    assert "Secret" not in {d["kind"] for d in docs}, "Secrets are created in the cluster, never kept in a manifest"
    for doc in docs:
        if doc["kind"] == "ConfigMap":  # its keys become env vars through envFrom
            leaked = [k for k in doc.get("data", {}) if any(w in k.upper() for w in SECRET_WORDS)]
            assert not leaked, f"ConfigMap/{doc['metadata']['name']}: {leaked}"
        for container in _containers(doc):
            for entry in container.get("env", []):
                if any(word in entry["name"].upper() for word in SECRET_WORDS):
                    where = f"{doc['kind']}/{doc['metadata']['name']}/{container.get('name')}: {entry['name']}"
                    assert "value" not in entry and "valueFrom" in entry, where


def test_ray_clusters_use_kuberay_token_auth():
    _check_ray_token_auth(_docs())


def test_mlflow_server_runs_the_auth_app_with_its_secrets():
    _check_mlflow_server_auth(_docs())


def test_a_job_creates_the_mlflow_accounts_from_secrets():
    _check_accounts_job(_docs())


def test_accounts_job_gives_what_the_accounts_module_requires(monkeypatch, capsys):
    from infra import mlflow_accounts

    monkeypatch.setattr(mlflow_accounts.os, "environ", {})
    assert mlflow_accounts.main() == 2
    missing = capsys.readouterr().err.split("set ", 1)[1].split(" (", 1)[0].split(", ")
    assert sorted(missing) == sorted(ACCOUNTS_REQUIRED)


def test_prefect_worker_gets_every_credential_from_secrets():
    _check_worker_credentials(_docs())


def test_ray_pods_get_the_pipeline_account_only():
    _check_ray_pods_credentials(_docs())


def test_no_manifest_holds_a_secret_value():
    _check_no_literal_secrets(_docs())


def _container(docs: list[dict[str, Any]], kind: str, name: str, index: int = 0) -> dict[str, Any]:
    doc = _named(docs, kind, name)
    if kind in ("RayCluster", "RayJob"):
        return _pod_templates(doc)[index]["spec"]["containers"][0]
    return doc["spec"]["template"]["spec"]["containers"][0]


def _set_env(container: dict[str, Any], name: str, entry: dict[str, Any]) -> None:
    container["env"] = [e for e in container.get("env", []) if e["name"] != name] + [{"name": name, **entry}]


def _drop_env(container: dict[str, Any], name: str) -> None:
    container["env"] = [e for e in container["env"] if e["name"] != name]


def _secret_ref(name: str, key: str) -> dict[str, Any]:
    return {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def _break_command(docs: list[dict[str, Any]]) -> None:
    server = _container(docs, "Deployment", "mlflow")
    server["command"] = [part.replace("--app-name predrnn-auth", "") for part in server["command"]]


BREAKAGES: dict[str, tuple[Any, Any]] = {  # name: (break a copy of the documents, the check that must fail)
    "raycluster_auth_removed": (
        lambda docs: _named(docs, "RayCluster", "predrnn")["spec"].pop("authOptions"), _check_ray_token_auth),
    "rayjob_auth_disabled": (
        lambda docs: _named(docs, "RayJob", "predrnn-train")["spec"]["rayClusterSpec"]["authOptions"].update(
            mode="disabled"), _check_ray_token_auth),
    "ray_template_sets_its_own_mode": (
        lambda docs: _set_env(_container(docs, "RayCluster", "predrnn"), "RAY_AUTH_MODE", {"value": "disabled"}),
        _check_ray_token_auth),
    "ray_version_without_token_auth": (
        lambda docs: _named(docs, "RayJob", "predrnn-train")["spec"]["rayClusterSpec"].update(rayVersion="2.51.0"),
        _check_ray_token_auth),
    "mlflow_without_auth_app": (_break_command, _check_mlflow_server_auth),
    "mlflow_admin_password_literal": (
        lambda docs: _set_env(_container(docs, "Deployment", "mlflow"), "MLFLOW_AUTH_ADMIN_PASSWORD", {"value": "x"}),
        _check_mlflow_server_auth),
    "mlflow_flask_key_from_other_secret": (
        lambda docs: _set_env(_container(docs, "Deployment", "mlflow"), "MLFLOW_FLASK_SERVER_SECRET_KEY",
                              _secret_ref("predrnn-postgres", "MLFLOW_FLASK_SERVER_SECRET_KEY")),
        _check_mlflow_server_auth),
    "auth_ini_holds_the_database_password": (
        lambda docs: _named(docs, "ConfigMap", "mlflow-auth-config")["data"].update(
            {"basic_auth.ini": _named(docs, "ConfigMap", "mlflow-auth-config")["data"]["basic_auth.ini"]
             + "database_uri = postgresql://mlflow:pw@mlflow-postgres:5432/mlflow\n"}), _check_mlflow_server_auth),
    "accounts_job_removed": (
        lambda docs: docs.remove(_named(docs, "Job", "mlflow-accounts")), _check_accounts_job),
    "accounts_job_pipeline_password_from_promoter": (
        lambda docs: _set_env(_container(docs, "Job", "mlflow-accounts"), "PREDRNN_PIPELINE_PASSWORD",
                              _secret_ref(PROMOTER_SECRET, "PREDRNN_PROMOTER_PASSWORD")), _check_accounts_job),
    "worker_auth_string_literal": (
        lambda docs: _set_env(_container(docs, "Deployment", "prefect-worker"), "PREFECT_API_AUTH_STRING",
                              {"value": "admin:pw"}), _check_worker_credentials),
    "worker_without_promoter": (
        lambda docs: _drop_env(_container(docs, "Deployment", "prefect-worker"), "PREDRNN_PROMOTER_PASSWORD"),
        _check_worker_credentials),
    "worker_without_pipeline_password": (
        lambda docs: _drop_env(_container(docs, "Deployment", "prefect-worker"), "MLFLOW_TRACKING_PASSWORD"),
        _check_worker_credentials),
    "worker_token_of_another_cluster": (
        lambda docs: _set_env(_container(docs, "Deployment", "prefect-worker"), "RAY_AUTH_TOKEN",
                              _secret_ref("predrnn", RAY_TOKEN_KEY)), _check_worker_credentials),
    "ray_worker_gets_promoter": (
        lambda docs: _set_env(_container(docs, "RayCluster", "predrnn", 1), "PREDRNN_PROMOTER_PASSWORD",
                              _secret_ref(PROMOTER_SECRET, "PREDRNN_PROMOTER_PASSWORD")), _check_ray_pods_credentials),
    "ray_head_gets_prefect_auth": (
        lambda docs: _container(docs, "RayJob", "predrnn-train")["envFrom"].append(
            {"secretRef": {"name": PREFECT_AUTH_SECRET}}), _check_ray_pods_credentials),
    "endpoints_carry_the_auth_string": (
        lambda docs: _named(docs, "ConfigMap", "predrnn-endpoints")["data"].update(PREFECT_API_AUTH_STRING="a:b"),
        _check_ray_pods_credentials),
    "ray_worker_without_mlflow_account": (
        lambda docs: _drop_env(_container(docs, "RayJob", "predrnn-train", 1), "MLFLOW_TRACKING_PASSWORD"),
        _check_ray_pods_credentials),
    "literal_token_in_a_job": (
        lambda docs: _set_env(_container(docs, "Job", "mlflow-accounts"), "SOME_API_TOKEN", {"value": "abc"}),
        _check_no_literal_secrets),
    "literal_password_in_postgres": (
        lambda docs: _set_env(_container(docs, "StatefulSet", "mlflow-postgres"), "POSTGRES_PASSWORD",
                              {"value": "pw"}), _check_no_literal_secrets),
    "secret_in_a_configmap": (
        lambda docs: _named(docs, "ConfigMap", "predrnn-endpoints")["data"].update(MLFLOW_TRACKING_PASSWORD="pw"),
        _check_no_literal_secrets),
    "secret_object_in_the_manifests": (
        lambda docs: docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                  "stringData": {"auth_token": "t"}}), _check_no_literal_secrets),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_auth_checks_reject_broken_manifests(breakage: str):
    docs = copy.deepcopy(_docs())
    mutate, check = BREAKAGES[breakage]
    check(docs)  # the real manifests pass the check that the broken copy must fail
    mutate(docs)
    with pytest.raises(AssertionError):
        check(docs)
