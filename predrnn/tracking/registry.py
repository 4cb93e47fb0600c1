"""The promotion gate: move the ``champion`` alias of a registered model, atomically and with a record.

MLflow has no multi-statement transactions, so a promotion is made of ordered steps whose single
commit point is the alias move:

1. read the registered model (current champion) and both versions' test metrics;
2. compare them on the same metric (lower is better) with a relative margin;
3. write the decision (previous champion, comparison, time) as tags on the candidate version;
4. move the alias (the commit);
5. read the alias back and check it; on any failure after step 3 the alias is put back where it
   was and read back again, and a :class:`RegistryError` says what the final state is.

A refused promotion changes no alias; its reason is recorded in tags on the candidate as well.
The decision tag reads ``pending`` between steps 3 and 5 and ``promoted`` only after the alias was read
back; a move that failed reads ``failed`` with the error in ``promotion.error``. When the store itself
was down, so that not even ``failed`` could be written, the next promotion of the model settles the
``pending`` version it finds (``promoted`` if the alias does point at it, otherwise ``failed``).
:func:`rollback` moves ``champion`` back to the version recorded as the previous champion.

MLflow is imported inside functions only, like every edge module of the package.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from predrnn.errors import PredrnnError
from predrnn.security import Account
from predrnn.tracking.runs import _client, check_tracking, resolve_tracking_uri

CHAMPION = "champion"
DEFAULT_METRIC = "test_mse"
DEFAULT_MARGIN = 0.01
TAG_PREFIX = "promotion."
PREVIOUS_TAG = TAG_PREFIX + "previous_champion"
DECISION_TAG = TAG_PREFIX + "decision"
COMPARISON_TAG = TAG_PREFIX + "comparison"
TIME_TAG = TAG_PREFIX + "time"
ERROR_TAG = TAG_PREFIX + "error"


class RegistryError(PredrnnError, RuntimeError):
    """The registry could not be read or changed; the message states the alias's final state."""


@dataclass
class Decision:
    """What a promotion or rollback decided and why.

    Attributes:
        model: registered model name.
        candidate: the version asked to become champion.
        previous: the champion before the call (None when there was none).
        champion: the champion after the call.
        promoted: whether the alias moved to ``candidate``.
        forced: whether the gate was bypassed.
        reason: one human sentence.
        comparison: metric name, both values, margin, threshold and the relative improvement.
    """

    model: str
    candidate: int
    previous: int | None
    champion: int | None
    promoted: bool
    forced: bool
    reason: str
    comparison: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields, plus ``verdict``."""
        return {**asdict(self), "verdict": self.verdict}

    @property
    def verdict(self) -> str:
        """The decision in a few words: ``promoted v3``, ``promoted v3 (forced)``, ``kept champion v2``, or
        ``v1 not promoted`` when there was no champion to keep."""
        if self.promoted:
            return f"promoted v{self.candidate}" + (" (forced)" if self.forced else "")
        if self.champion is not None:
            return f"kept champion v{self.champion}"
        return f"v{self.candidate} not promoted"

    def markdown(self) -> str:
        """A short report for a Prefect artifact or a model-version description: the verdict, the reason,
        and one row per bar the candidate had to clear (the champion's threshold, a baseline), each with
        the value the candidate needed and whether it did."""
        c = self.comparison
        lines = [f"## {self.model}: {self.verdict}", "", f"- candidate: version {self.candidate}",
                 f"- champion before: {'v' + str(self.previous) if self.previous is not None else 'none'}",
                 f"- champion after: {'v' + str(self.champion) if self.champion is not None else 'none'}",
                 f"- forced: {'yes' if self.forced else 'no'}", f"- reason: {self.reason}"]
        rows = []
        lower = c.get("lower_is_better", True)
        if c.get("champion") is not None and self.previous is not None:
            bound = "<=" if lower else ">="
            rows.append(f"| champion v{self.previous} | {_fmt(c['champion'])} | {bound} {_fmt(c.get('threshold'))} "
                        f"({_fmt(c.get('margin'))} margin) | {'yes' if c.get('better') else 'no'} |")
        beat = c.get("must_beat")
        if beat:
            rows.append(f"| {beat['baseline']} baseline | {_fmt(beat.get('value'))} | {'<' if lower else '>'} "
                        f"{_fmt(beat.get('value'))} | {'yes' if beat.get('beaten') else 'no'} |")
        if c and rows:
            lines += ["", f"candidate's {c.get('metric')}: {_fmt(c.get('candidate'))} "
                          f"({'lower' if lower else 'higher'} is better)", "",
                      f"| compared with | its {c.get('metric')} | candidate needed | cleared |", "|---|---|---|---|",
                      *rows]
        if c.get("dataset"):
            lines.append(f"\nevaluated on `{c['dataset']}`")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    from predrnn.scorecard import number

    return number(v)


def _connect(tracking_uri: str | None, action: str) -> tuple[str, Any]:
    """The resolved store URI and a client, after checking the store answers (else ``action`` not started)."""
    uri = resolve_tracking_uri(tracking_uri)
    try:
        check_tracking(uri)
    except Exception as err:
        raise RegistryError(f"{action} not started: {err}") from err
    return uri, _client(uri)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def compare(candidate: float | None, champion: float | None, *, margin: float = DEFAULT_MARGIN,
            metric: str = DEFAULT_METRIC, lower_is_better: bool = True) -> dict[str, Any]:
    """Does ``candidate`` beat ``champion`` by a relative ``margin`` in the metric's direction?

    Lower is better (MSE): the candidate passes when ``candidate <= champion - margin * |champion|``.
    Higher is better (CSI, FSS, HSS): when ``candidate >= champion + margin * |champion|``. With no
    champion value the candidate passes if its own value is finite.

    Returns:
        ``{"metric", "candidate", "champion", "margin", "threshold", "improvement", "better",
        "lower_is_better"}``; ``improvement`` is relative, positive when the candidate is better.
    """
    if margin < 0 or margin >= 1:
        raise ValueError(f"margin must lie in [0, 1), got {margin}")
    ok_cand = candidate is not None and math.isfinite(candidate)
    ok_champ = champion is not None and math.isfinite(champion)
    sign = -1.0 if lower_is_better else 1.0
    threshold = improvement = None
    if ok_champ:
        assert champion is not None
        threshold = champion + sign * margin * abs(champion)
        if ok_cand and champion:
            assert candidate is not None
            improvement = sign * (candidate - champion) / abs(champion)
    if not ok_cand:
        better = False
    elif not ok_champ:
        better = True
    else:
        better = bool(candidate <= threshold) if lower_is_better else bool(candidate >= threshold)  # type: ignore[operator]
    return {"metric": metric, "candidate": candidate, "champion": champion, "margin": margin,
            "threshold": threshold, "improvement": improvement, "better": better,
            "lower_is_better": lower_is_better}


def metric_tag(score: str) -> str:
    """The run metric a score's test mean is logged under at registration: ``mse`` -> ``test_mse``."""
    return score if score.startswith("test_") else f"test_{score}"


def current_champion(model_name: str, *, tracking_uri: str | None = None, alias: str = CHAMPION,
                     missing_ok: bool = False) -> int | None:
    """The version the alias points to, or None.

    Args:
        missing_ok: return None (instead of raising) when the model is not registered yet.

    Raises:
        RegistryError: the store is unreachable or (unless ``missing_ok``) the model is not registered.
    """
    uri = resolve_tracking_uri(tracking_uri)
    try:
        return _aliases(_client(uri), model_name, uri).get(alias)
    except RegistryError as err:
        if missing_ok and getattr(err.__cause__, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _aliases(client: Any, model_name: str, uri: str) -> dict[str, int]:
    try:
        model = client.get_registered_model(model_name)
    except Exception as err:
        raise RegistryError(f"cannot read registered model {model_name!r} from {uri}: "
                            f"{type(err).__name__}: {_short(err)}") from err
    return {k: int(v) for k, v in (model.aliases or {}).items()}


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:300]


def version_metric(model_name: str, version: int, metric: str = DEFAULT_METRIC, *,
                   tracking_uri: str | None = None) -> tuple[float | None, str | None]:
    """``(value, dataset)`` of a version's test score (:func:`_metric_of`) and the dataset it was measured on."""
    uri = resolve_tracking_uri(tracking_uri)
    return _metric_of(_client(uri), model_name, version, metric, uri)


def _metric_of(client: Any, name: str, version: int, metric: str, uri: str,
               read: dict[int, tuple[dict[str, float], dict[str, str]]] | None = None
               ) -> tuple[float | None, str | None]:
    """A version's ``metric`` (``test_mse``, ``test_csi_m``, ``test_persistence_mse`` ...) and its ``dataset``
    tag (``NAME@VERSION``): the metric of the run that registered it (every score's mean over lead times is
    logged there), else a version tag of that name (versions registered before the scores moved to the run).

    ``read``: versions already read (run metrics, version tags), filled here; one read per version."""
    read = {} if read is None else read
    if version not in read:
        read[version] = _read_version(client, name, version, uri)
    metrics, tags = read[version]
    raw: Any = metrics.get(metric)
    if raw is None:
        raw = tags.get(metric)
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        value = None
    return value, tags.get("dataset")


def _read_version(client: Any, name: str, version: int, uri: str) -> tuple[dict[str, float], dict[str, str]]:
    """``(run metrics, version tags)`` of one version; :class:`RegistryError` naming what could not be read."""
    try:
        mv = client.get_model_version(name, str(version))
    except Exception as err:
        raise RegistryError(f"cannot read version {version} of {name!r} from {uri}: "
                            f"{type(err).__name__}: {_short(err)}") from err
    metrics: dict[str, float] = {}
    if mv.run_id:
        try:
            metrics = dict(client.get_run(mv.run_id).data.metrics)
        except Exception as err:
            raise RegistryError(f"cannot read the run {mv.run_id} of {name!r} v{version} from {uri}: "
                                f"{type(err).__name__}: {_short(err)}") from err
    return metrics, dict(mv.tags or {})


class _AliasWriter:
    """The three registry calls of an alias move, made as ``account`` (MLflow basic auth) on ``uri``."""

    def __init__(self, uri: str, account: Account) -> None:
        from mlflow.store.model_registry.rest_store import RestStore
        from mlflow.utils.credentials import get_default_host_creds

        creds = get_default_host_creds(uri)  # TLS settings of the environment; the account's name and password
        creds.username, creds.password = account.username, account.password
        self._store = RestStore(lambda: creds)

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self._store.set_registered_model_alias(name, alias, version)

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self._store.delete_registered_model_alias(name, alias)

    def get_registered_model(self, name: str) -> Any:
        return self._store.get_registered_model(name)


def _alias_writer(client: Any, uri: str, promoter: Account | None) -> Any:
    """Who moves an alias: the promoter's account on a tracking server, else the store's own client."""
    if promoter is not None and uri.startswith(("http://", "https://")):
        return _AliasWriter(uri, promoter)
    return client


def _set_alias_verified(client: Any, name: str, alias: str, version: int | None) -> None:
    """Point ``alias`` at ``version`` (None deletes it) and read it back."""
    if version is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, str(version))
    now = {k: int(v) for k, v in (client.get_registered_model(name).aliases or {}).items()}.get(alias)
    if now != version:
        raise RegistryError(f"alias {alias!r} of {name!r} reads back as {now}, expected {version}")


def _move_alias(client: Any, name: str, alias: str, target: int, previous: int | None, uri: str) -> None:
    """Move the alias; on failure restore ``previous`` and raise an error stating the final state."""
    try:
        _set_alias_verified(client, name, alias, target)
        return
    except Exception as err:
        cause = f"{type(err).__name__}: {_short(err)}"
    try:
        _set_alias_verified(client, name, alias, previous)
        state = f"restored: {alias!r} points to {previous if previous is not None else 'no version'} as before"
    except Exception as err2:
        state = (f"could not restore or verify ({type(err2).__name__}: {_short(err2)}); the server keeps "
                 f"whichever single alias write it committed last. Check with `predrnn champion {name}` "
                 "once it is back")
    raise RegistryError(f"moving {alias!r} of {name!r} to version {target} failed on {uri} ({cause}); {state}")


DECISION_MARK = "<!-- promotion -->"  # the version description's decision section starts here (invisible)


def _record(client: Any, name: str, version: int, tags: dict[str, str], decision: str | None = None) -> None:
    """Set ``tags`` on the version and, with ``decision`` (markdown), put it under the description written at
    registration (a section replacing the previous decision's)."""
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, v)
    if decision is not None:
        before = (client.get_model_version(name, str(version)).description or "").split(DECISION_MARK)[0].rstrip()
        text = f"{before}\n\n{DECISION_MARK}\n\n{decision}" if before else f"{DECISION_MARK}\n\n{decision}"
        client.update_model_version(name, str(version), description=text)


def record_failure(model_name: str, version: int, error: str, *, tracking_uri: str, wait_s: float = 0.0,
                   poll_s: float = 2.0) -> bool:
    """Tag ``version`` ``promotion.decision=failed`` with ``error`` (``promotion.error``), retrying for up to
    ``wait_s`` seconds while the store is unreachable (an outage that interrupted the promotion).

    Returns:
        Whether the tags were written (False: the store stayed down; the version reads ``pending`` until
        the next promotion settles it).
    """
    import time

    client = _client(tracking_uri)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.set_model_version_tag(model_name, str(version), ERROR_TAG, error[:5000])
            client.set_model_version_tag(model_name, str(version), DECISION_TAG, "failed")
            return True
        except Exception:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)


def _settle_pending(client: Any, name: str, alias: str, current: int | None) -> None:
    """Versions whose promotion was cut off before its outcome could be written (tag ``pending``):
    ``promoted`` if ``alias`` points at them, otherwise ``failed`` with the reason."""
    for mv in client.search_model_versions(f"name='{name}'"):
        if (mv.tags or {}).get(DECISION_TAG) != "pending":
            continue
        if int(mv.version) == current:
            client.set_model_version_tag(name, mv.version, DECISION_TAG, "promoted")
        else:
            client.set_model_version_tag(name, mv.version, ERROR_TAG, (
                f"the promotion was interrupted before the {alias!r} alias moved (store unreachable); "
                f"{alias} stayed {'v' + str(current) if current is not None else 'unset'}"))
            client.set_model_version_tag(name, mv.version, DECISION_TAG, "failed")


def promote(model_name: str, version: int, *, force: bool = False, margin: float = DEFAULT_MARGIN,
            metric: str = DEFAULT_METRIC, tracking_uri: str | None = None, candidate_value: float | None = None,
            champion_value: float | None = None, dataset: str | None = None,
            alias: str = CHAMPION, lower_is_better: bool | None = None, promoter: Account | None = None,
            must_beat: tuple[str, float | None] | None = None,
            first_must_beat: tuple[str, float | None] | None = None) -> Decision:
    """Make ``version`` the champion if it beats the current champion by ``margin`` (or ``force``).

    Without explicit values the versions' ``metric`` test scores (their runs' metrics, :func:`_metric_of`)
    are compared, and only if both were evaluated on the same dataset. A flow that evaluated both models on the
    same held-out test version passes ``candidate_value``, ``champion_value`` and ``dataset``.

    Args:
        model_name: registered model name.
        version: the candidate version.
        force: move the alias whatever the comparison says (the comparison is still recorded).
        margin: relative improvement required, e.g. 0.01 for 1 % lower ``metric``.
        metric: a test score of the versions' runs (``test_mse``, ``test_csi_m``, ``test_csi_2``, ``test_fss_2_n9`` ...:
            :func:`metric_tag` of a :func:`predrnn.scorecard.summary_values` name); logged at registration.
        lower_is_better: the metric's direction; default from its name (:func:`predrnn.scorecard.lower_is_better`).
        tracking_uri: MLflow store (default: ``$MLFLOW_TRACKING_URI`` or the local SQLite).
        candidate_value, champion_value: measured values that replace the recorded scores.
        dataset: the dataset both values were measured on (recorded).
        alias: the alias to move.
        promoter: the account that moves the alias on a tracking server whose ``champion`` only promoters
            move (:mod:`predrnn.tracking.auth_app`); None: the store's own credentials.
        must_beat: ``(baseline, its value)`` of ``metric`` on the same test split as ``candidate_value``: the
            candidate must also be strictly better than that baseline (e.g. ``("extrapolation", 0.41)``).
        first_must_beat: with no champion yet, the baseline the first candidate must be strictly better than
            on ``metric`` (the strongest one its evaluation scored). Without it (and without ``must_beat``) a
            first candidate gated on ``test_mse`` must beat its registered ``test_persistence_mse``; on any
            other score with no baseline value, the gate refuses (evaluate with a dataset, or ``force``).

    Returns:
        The :class:`Decision`; ``promoted`` is False when the gate refused (nothing moved).

    Raises:
        RegistryError: unreachable store, unknown model or version, or a failed alias move (the
            alias is restored and the message says where it points).
    """
    from predrnn.scorecard import lower_is_better as direction

    try:
        lower = direction(metric) if lower_is_better is None else lower_is_better
    except KeyError as err:
        raise ValueError(str(err).strip("'\"")) from None
    uri, client = _connect(tracking_uri, f"promotion of {model_name} v{version}")
    version = int(version)
    previous = _aliases(client, model_name, uri).get(alias)
    try:
        _settle_pending(client, model_name, alias, previous)
    except Exception as err:
        raise RegistryError(f"cannot read the versions of {model_name} at {uri}: {_short(err)}") from err
    read: dict[int, tuple[dict[str, float], dict[str, str]]] = {}  # each version read once
    cand_val, cand_ds = _metric_of(client, model_name, version, metric, uri, read)
    if candidate_value is not None:
        cand_val, cand_ds = candidate_value, dataset or cand_ds
    champ_val, champ_ds = (None, None)
    if previous is not None and previous != version:
        champ_val, champ_ds = _metric_of(client, model_name, previous, metric, uri, read)
        if champion_value is not None:
            champ_val, champ_ds = champion_value, dataset or champ_ds
    comparison = compare(cand_val, champ_val, margin=margin, metric=metric, lower_is_better=lower)
    comparison["dataset"] = dataset or (cand_ds if cand_ds == champ_ds else None)
    comparable = previous is None or previous == version or candidate_value is not None or cand_ds == champ_ds

    if previous == version:
        reason, ok = f"version {version} already is the {alias}", False
    elif not comparable:
        reason, ok = (f"not comparable: candidate evaluated on {cand_ds}, champion v{previous} on {champ_ds}; "
                      "evaluate both on the same test version (the promote flow does) or use force"), False
    elif comparison["better"]:
        if previous is None:
            reason = f"no {alias} yet; {metric} {_fmt(cand_val)}"
        else:
            reason = (f"{metric} {_fmt(cand_val)} {'<=' if lower else '>='} {_fmt(comparison['threshold'])} "
                      f"(champion v{previous} {_fmt(champ_val)} {'less' if lower else 'plus'} {margin:.1%})")
        ok = True
    else:
        reason = (f"{metric} {_fmt(cand_val)} is not {'below' if lower else 'above'} "
                  f"{_fmt(comparison['threshold'])} (champion v{previous} {_fmt(champ_val)} "
                  f"{'less' if lower else 'plus'} {margin:.1%})" if cand_val is not None and comparison['threshold']
                  is not None else f"candidate has no finite {metric} value")
        ok = False
    if previous is None and must_beat is None:  # the first model is gated too: it must beat a baseline
        must_beat = first_must_beat
        if must_beat is None and metric == "test_mse":
            must_beat = ("persistence", _metric_of(client, model_name, version, "test_persistence_mse", uri,
                                                         read)[0])
        if must_beat is None or must_beat[1] is None:
            ok = False
            reason = (f"no {alias} yet, and no baseline's {metric} to beat: evaluate on a dataset (the promote "
                      "flow's or predrnn promote's --data) or force")
            must_beat = None
    if must_beat is not None and previous != version and comparable:
        b_name, b_val = must_beat
        beaten = (cand_val is not None and b_val is not None and math.isfinite(cand_val) and math.isfinite(b_val)
                  and (cand_val < b_val if lower else cand_val > b_val))
        comparison["must_beat"] = {"baseline": b_name, "value": b_val, "beaten": beaten}
        if not beaten:
            ok = False
            reason = ((f"no {alias} yet; " if previous is None else "") + f"{metric} {_fmt(cand_val)} does not beat "
                      f"the {b_name} baseline's {_fmt(b_val)} on the same test split"
                      + ("" if previous is None else f"; {reason}"))
        elif previous is None:
            reason = f"no {alias} yet; {metric} {_fmt(cand_val)} beats the {b_name} baseline's {_fmt(b_val)}"
    move = previous != version and (ok or force)
    if force and not ok and previous != version:
        reason = f"forced; the gate would have refused: {reason}"

    decision = Decision(model=model_name, candidate=version, previous=previous,
                        champion=version if move else previous, promoted=move, forced=force and move,
                        reason=reason, comparison=comparison)
    # A promotion is recorded as "pending" until the alias has moved: a store that fails in between leaves
    # the candidate honestly unpromoted, never tagged "promoted" with the alias still on the champion.
    tags = {DECISION_TAG: "pending" if move else "refused", COMPARISON_TAG: json.dumps(comparison, default=str),
            TIME_TAG: _now(), TAG_PREFIX + "reason": reason[:5000]}
    if move:
        tags[PREVIOUS_TAG] = "" if previous is None else str(previous)
    try:
        _record(client, model_name, version, tags, decision.markdown() if move else None)
    except Exception as err:
        raise RegistryError(f"cannot record the decision on {model_name} v{version} at {uri} "
                            f"({type(err).__name__}: {_short(err)}); the {alias!r} alias was not touched "
                            f"(still {previous})") from err
    if move:
        try:
            _move_alias(_alias_writer(client, uri, promoter), model_name, alias, version, previous, uri)
        except RegistryError as err:
            with contextlib.suppress(Exception):  # the store is down: the tag stays "pending" (see record_failure)
                client.set_model_version_tag(model_name, str(version), ERROR_TAG, str(err)[:5000])
                client.set_model_version_tag(model_name, str(version), DECISION_TAG, "failed")
            raise
        try:
            client.set_model_version_tag(model_name, str(version), DECISION_TAG, "promoted")
        except Exception as err:
            raise RegistryError(f"the {alias!r} alias of {model_name} moved to version {version}, but its decision "
                                f"tag could not be written at {uri} ({type(err).__name__}: {_short(err)}); it reads "
                                "'pending'") from err
    return decision


def rollback(model_name: str, *, tracking_uri: str | None = None, alias: str = CHAMPION,
             promoter: Account | None = None) -> Decision:
    """Point ``alias`` back at the version that was champion before the current one (moved as ``promoter``,
    see :func:`promote`).

    Raises:
        RegistryError: no champion, no recorded previous champion, or a failed move (restored).
    """
    uri, client = _connect(tracking_uri, f"rollback of {model_name}")
    current = _aliases(client, model_name, uri).get(alias)
    if current is None:
        raise RegistryError(f"{model_name} has no {alias!r} alias to roll back")
    try:
        tags = client.get_model_version(model_name, str(current)).tags or {}
    except Exception as err:
        raise RegistryError(f"cannot read {model_name} v{current}: {type(err).__name__}: {_short(err)}") from err
    prev_raw = tags.get(PREVIOUS_TAG, "")
    if not prev_raw:
        raise RegistryError(f"{model_name} v{current} records no previous {alias}; nothing to roll back to")
    previous = int(prev_raw)
    reason = f"rolled back from v{current} to v{previous}"
    _move_alias(_alias_writer(client, uri, promoter), model_name, alias, previous, current, uri)
    try:
        _record(client, model_name, current, {TAG_PREFIX + "rolled_back_at": _now(), DECISION_TAG: "rolled-back"})
        _record(client, model_name, previous, {TAG_PREFIX + "restored_at": _now()})
    except Exception:  # the alias already points at the previous champion; tags are informative only
        pass
    return Decision(model=model_name, candidate=previous, previous=current, champion=previous, promoted=True,
                    forced=False, reason=reason)
