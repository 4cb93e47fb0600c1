"""The MLflow accounts of a predrnn deployment, created (or their passwords set) by the server's admin.

- ``pipeline``: the ``pipeline`` role, EDIT on every experiment and registered model: runs, model
  versions, tags; it cannot move ``@champion``.
- ``promoter``: the ``promoter`` role, EDIT on every registered model and the right to move
  ``@champion`` (:mod:`predrnn.tracking.auth_app`).

Idempotent: an existing account gets the given password (a rotation), existing roles and grants stay.
The local stack calls :func:`ensure_accounts` at every start; on Kubernetes a Job runs
``python -m infra.mlflow_accounts`` with the passwords from Secrets (``infra/k8s/mlflow.yaml``):
``MLFLOW_TRACKING_URI``, ``MLFLOW_AUTH_ADMIN_PASSWORD``, ``PREDRNN_PIPELINE_PASSWORD``,
``PREDRNN_PROMOTER_PASSWORD`` (user names: ``MLFLOW_AUTH_ADMIN_USERNAME``, ``MLFLOW_TRACKING_USERNAME``,
``PREDRNN_PROMOTER_USERNAME``; default admin, pipeline, promoter). No password is printed.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from predrnn.tracking.auth_app import PROMOTER_ROLE

PIPELINE_ROLE = "pipeline"
WORKSPACE = "default"  # MLflow's workspace when workspaces are off


class AccountsError(RuntimeError):
    """MLflow refused a user or role call; the message names the call, never a password."""


def _call(url: str, admin: tuple[str, str], method: str, path: str, body: dict[str, Any] | None = None,
          query: dict[str, str] | None = None) -> tuple[int, Any]:
    creds = base64.b64encode(f"{admin[0]}:{admin[1]}".encode()).decode()
    full = url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(full, data=None if body is None else json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json", "Authorization": f"Basic {creds}"})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 - the deployment's own server
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        try:
            return err.code, json.loads(text)
        except ValueError:
            return err.code, {"message": text}


def ensure_accounts(url: str, *, admin: tuple[str, str], pipeline: tuple[str, str],
                    promoter: tuple[str, str]) -> None:
    """Create or update the pipeline and promoter accounts and their roles on the MLflow server at ``url``.

    Args:
        url: the tracking server (basic auth on, :mod:`predrnn.tracking.auth_app`).
        admin, pipeline, promoter: ``(user, password)`` of each account.

    Raises:
        AccountsError: a call was refused (wrong admin password, auth not enabled, ...).
    """

    def ok(status: int, body: Any, what: str, allowed: tuple[str, ...] = ()) -> Any:
        if status == 200 or (isinstance(body, dict) and body.get("error_code") in allowed):
            return body
        raise AccountsError(f"MLflow at {url} refused to {what} ({status}): {str(body.get('message', body))[:300]}")

    for user, password in (pipeline, promoter):
        status, body = _call(url, admin, "POST", "/api/2.0/mlflow/users/create",
                             {"username": user, "password": password})
        if isinstance(body, dict) and body.get("error_code") == "RESOURCE_ALREADY_EXISTS":
            ok(*_call(url, admin, "PATCH", "/api/2.0/mlflow/users/update-password",
                      {"username": user, "password": password}), f"set the password of {user}")
        else:
            ok(status, body, f"create user {user}")
    listed = ok(*_call(url, admin, "GET", "/api/3.0/mlflow/roles/list", query={"workspace": WORKSPACE}), "list roles")
    ids = {r["name"]: int(r["id"]) for r in listed.get("roles", [])}
    grants = {PIPELINE_ROLE: ("experiment", "registered_model"), PROMOTER_ROLE: ("registered_model",)}
    for role, kinds in grants.items():
        if role not in ids:
            made = ok(*_call(url, admin, "POST", "/api/3.0/mlflow/roles/create",
                             {"name": role, "workspace": WORKSPACE}), f"create role {role}")
            ids[role] = int(made["role"]["id"])
        for kind in kinds:
            ok(*_call(url, admin, "POST", "/api/3.0/mlflow/roles/permissions/add",
                      {"role_id": ids[role], "resource_type": kind, "resource_pattern": "*", "permission": "EDIT"}),
               f"grant {role} EDIT on {kind}", ("RESOURCE_ALREADY_EXISTS",))
    for user, role in ((pipeline[0], PIPELINE_ROLE), (promoter[0], PROMOTER_ROLE)):
        ok(*_call(url, admin, "POST", "/api/3.0/mlflow/roles/assign", {"username": user, "role_id": ids[role]}),
           f"give {user} the {role} role", ("RESOURCE_ALREADY_EXISTS",))


def main() -> int:
    """``python -m infra.mlflow_accounts``: :func:`ensure_accounts` from the environment, waiting up to
    ``PREDRNN_MLFLOW_WAIT_S`` (default 300) seconds for the server; exit 2 with one line on a missing setting."""
    env = os.environ
    need = ["MLFLOW_TRACKING_URI", "MLFLOW_AUTH_ADMIN_PASSWORD", "PREDRNN_PIPELINE_PASSWORD",
            "PREDRNN_PROMOTER_PASSWORD"]
    missing = [k for k in need if not env.get(k)]
    if missing:
        print(f"error: set {', '.join(missing)} (from the deployment's Secrets)", file=sys.stderr)
        return 2
    url = env["MLFLOW_TRACKING_URI"]
    deadline = time.monotonic() + float(env.get("PREDRNN_MLFLOW_WAIT_S", "300"))
    while True:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5):  # noqa: S310
                break
        except OSError:
            if time.monotonic() > deadline:
                print(f"error: MLflow at {url} did not answer /health", file=sys.stderr)
                return 1
            time.sleep(3)
    try:
        ensure_accounts(url, admin=(env.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin"), env["MLFLOW_AUTH_ADMIN_PASSWORD"]),
                        pipeline=(env.get("MLFLOW_TRACKING_USERNAME", "pipeline"), env["PREDRNN_PIPELINE_PASSWORD"]),
                        promoter=(env.get("PREDRNN_PROMOTER_USERNAME", "promoter"), env["PREDRNN_PROMOTER_PASSWORD"]))
    except AccountsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"MLflow accounts ready at {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
