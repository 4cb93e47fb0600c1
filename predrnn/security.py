"""Secrets at rest and Ray's token authentication, resolved once at a door.

Every Ray the project starts or joins runs with Ray's token authentication (``RAY_AUTH_MODE=token``,
Ray 2.52+). The token is taken from ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` when the user
gives one; otherwise it is generated once per state folder into ``<state>/ray/auth_token`` (mode
0600) and handed to Ray by its path. The token itself never enters an argument, a spec, a log line
or a task parameter: Ray's own processes read it from the file or the environment.

Files holding a secret (a token, an ``.env``, the stack's credentials) are written with
:func:`write_private`: created 0600 in a 0700 folder, replaced atomically, never group- or
world-readable even for a moment.

Nothing here imports Ray, MLflow or Prefect.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from predrnn.errors import PredrnnError

RAY_TOKEN_FILE = Path("ray") / "auth_token"


class SecurityError(PredrnnError, ValueError):
    """A setting would weaken authentication, or a secret file is unusable (one line, exit 2)."""


def write_private(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (0600), atomically.

    The folder is created 0700 when missing; the file is written under a temporary name with mode
    0600 from its creation and renamed over ``path``, so no reader ever sees a partial secret or a
    looser mode.

    Returns:
        ``path`` as an absolute :class:`~pathlib.Path`.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_private(path: Path) -> None:
    """Refuse a secret file that others can read.

    Raises:
        SecurityError: ``path`` is readable or writable by its group or by others (fix: ``chmod 600``).
    """
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(f"{path} holds a secret but has mode {stat.filemode(mode)}; make it private to its "
                            f"owner: chmod 600 {path}")


def new_secret(nbytes: int = 32) -> str:
    """A random secret of ``nbytes`` bytes of entropy, as hex (256 bits by default)."""
    return secrets.token_hex(nbytes)


def ensure_secret_file(path: str | Path, nbytes: int = 32) -> Path:
    """The secret in ``path``, generated (:func:`new_secret`, 0600) on first use and kept afterwards.

    Raises:
        SecurityError: the file exists but others can read it, or it is empty.
    """
    path = Path(path).absolute()
    if not path.exists():
        return write_private(path, new_secret(nbytes))
    check_private(path)
    if not path.read_text().strip():
        raise SecurityError(f"{path} is empty; delete it and a new secret is generated")
    return path


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``, optionally ``HOST:PORT``) is this machine only."""
    if not host:
        return True
    name = host.strip()
    if name.startswith("["):  # [::1]:6379
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def ray_auth_env(state: str | Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment that puts every Ray of this process and its children under token authentication.

    The token comes from, in order: ``RAY_AUTH_TOKEN`` (the token itself), ``RAY_AUTH_TOKEN_PATH`` (a
    file holding it), else ``<state>/ray/auth_token``, generated on first use (0600, 256 bits).

    Args:
        state: the state folder (``PREDRNN_STATE_DIR``) that owns the generated token.
        environ: the caller's environment (read, not changed).

    Returns:
        The variables to set: ``RAY_AUTH_MODE=token`` and, when the token is ours,
        ``RAY_AUTH_TOKEN_PATH`` (a path; the token itself never appears in the environment we set).

    Raises:
        SecurityError: ``RAY_AUTH_MODE`` asks for anything but ``token``; ``RAY_AUTH_TOKEN_PATH`` names a
            missing, empty or non-private file.
    """
    mode = (environ.get("RAY_AUTH_MODE") or "token").strip().lower()
    if mode != "token":
        raise SecurityError(f"RAY_AUTH_MODE={environ['RAY_AUTH_MODE']}: predrnn runs Ray with token "
                            "authentication only (anyone who reaches an open Ray port can run code on it); unset "
                            "RAY_AUTH_MODE and a token is kept under the state folder, or give RAY_AUTH_TOKEN_PATH")
    out = {"RAY_AUTH_MODE": "token"}
    if environ.get("RAY_AUTH_TOKEN", "").strip():
        return out
    given = environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if given:
        path = Path(given).expanduser()
        if not path.is_file() or not path.read_text().strip():
            raise SecurityError(f"RAY_AUTH_TOKEN_PATH={given} is not a file holding a token; point it at the "
                                "cluster's token file, or unset it to use the state folder's own token")
        check_private(path)
        return out
    out["RAY_AUTH_TOKEN_PATH"] = str(ensure_secret_file(Path(state) / RAY_TOKEN_FILE))
    return out


@dataclass(frozen=True)
class Account:
    """A user name and its password for a service (MLflow's basic auth); the password never shows in a repr.

    Built at a door from the settings and passed down as an object, never as a task parameter or a
    logged value.
    """

    username: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return self.username
