"""The MLflow server app of the stack and the manifests: MLflow's basic-auth app, plus one rule.

MLflow's basic-auth app (``mlflow server --app-name basic-auth``) authenticates every request
(401 without credentials) and checks per-resource permissions (READ, USE, EDIT, MANAGE). Moving an
alias needs only EDIT on the registered model, which the pipeline's account must have to register
model versions at all; so any account that trains could move ``@champion`` around the promotion gate,
and so could anyone with EDIT clicking the alias editor in the UI.

This app (``mlflow server --app-name predrnn-auth``, an ``mlflow.app`` entry point) adds the rule that
setting or deleting a protected alias (``champion``), and deleting the model version it points to or
the registered model that carries it, needs the ``promoter`` role (an MLflow role, in any workspace)
or an admin account; any other caller gets 403 and the alias stays where it was. The
CLI's ``promote``/``rollback`` and the promote and nightly flows move the alias with the promoter's
credentials (``PREDRNN_PROMOTER_USERNAME``/``PREDRNN_PROMOTER_PASSWORD``).

Configuration is MLflow's own: ``MLFLOW_AUTH_CONFIG_PATH`` (an ini file: the user database, the
admin's name, ``default_permission``), ``MLFLOW_AUTH_ADMIN_PASSWORD`` for the first start and
``MLFLOW_FLASK_SERVER_SECRET_KEY``. Imported only by the MLflow server process.
"""

from __future__ import annotations

from typing import Any

PROTECTED_ALIASES = frozenset({"champion"})
PROMOTER_ROLE = "promoter"
_ALIAS_ROUTE = "/mlflow/registered-models/alias"
_DELETE_VERSION_ROUTE = "/mlflow/model-versions/delete"
_DELETE_MODEL_ROUTE = "/mlflow/registered-models/delete"


def _refusal(message: str) -> Any:
    from flask import jsonify

    resp = jsonify({"error_code": "PERMISSION_DENIED", "message": message})
    resp.status_code = 403
    return resp


def guard_protected_alias() -> Any:
    """Flask ``before_request`` hook: a protected alias moves only for a promoter or an admin.

    Runs after basic-auth's own hook, so the caller is authenticated and holds EDIT on the model.

    Returns:
        None to let the request through, or a 403 response naming the missing role.
    """
    from flask import request
    from mlflow.exceptions import MlflowException
    from mlflow.server import auth

    alias = _protected_alias_touched(request, auth, MlflowException)
    if alias is None:
        return None
    who = auth.authenticate_request()
    username = getattr(who, "username", None)
    if not username:
        return auth.make_basic_auth_response()
    user = auth.store.get_user(username)
    if user.is_admin or any(role.name == PROMOTER_ROLE for role in auth.store.list_user_roles(user.id)):
        return None
    return _refusal(f"user {username!r} may not move @{alias}: that needs the {PROMOTER_ROLE!r} role (predrnn "
                    "promote / rollback run with the promoter's account), so a model becomes champion only "
                    "through the promotion gate")


def _protected_alias_touched(request: Any, auth: Any, error: type[Exception]) -> str | None:
    """The protected alias this request would move or remove (directly, or by deleting its version or its
    registered model), else None."""
    path, method = request.path, request.method
    try:
        if method in ("POST", "DELETE") and path.endswith(_ALIAS_ROUTE):
            alias = auth._get_request_param("alias")
            return alias if alias in PROTECTED_ALIASES else None
        if method == "DELETE" and path.endswith((_DELETE_VERSION_ROUTE, _DELETE_MODEL_ROUTE)):
            from mlflow.server.handlers import _get_model_registry_store

            name = auth._get_request_param("name")
            aliases = _get_model_registry_store().get_registered_model(name).aliases or {}
            version = auth._get_request_param("version") if path.endswith(_DELETE_VERSION_ROUTE) else None
            for alias, target in aliases.items():
                if alias in PROTECTED_ALIASES and (version is None or str(target) == str(version)):
                    return str(alias)
    except error:
        return None  # malformed or unknown: MLflow's own handler answers it
    return None


def create_app() -> Any:
    """The served app: MLflow's basic-auth app with :func:`guard_protected_alias` after its own checks."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as basic_auth_app

    served = basic_auth_app(flask_app)
    flask_app.before_request(guard_protected_alias)
    return served
