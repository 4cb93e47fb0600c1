"""Ray in one place: connect to (or start) a cluster, the ``TorchTrainer`` recipe, and the stop path.

``predrnn train`` and every Ray Tune trial build their worker group here, so a run and a trial get
the same environment, failure policy and checkpoint rules. Ray is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from predrnn.config import ExperimentConfig

# Ray's unix socket paths (under its temp dir) have a length limit of about 107 bytes.
_MAX_TEMP_DIR = 60


def export_cluster_address() -> None:
    """Put the cluster's GCS address in ``RAY_ADDRESS`` of this worker process.

    Ray Train's placement-group cleaner finds its cluster by address auto-detection, which fails when
    several Ray instances run on one machine (a stack's head next to a local one); a stopped trial's
    CPUs would then stay reserved and the next trial would time out.
    """
    import ray

    from predrnn.settings import ray_process_env

    with contextlib.suppress(Exception):  # not connected yet: auto-detection stays as it was
        ray_process_env({"RAY_ADDRESS": ray.get_runtime_context().gcs_address})


def bind_rendezvous_to_loopback() -> None:
    """Make rank 0's DDP rendezvous store listen on its loopback address when the master address is one.

    ``torch.distributed`` (the ``tcp://`` rendezvous Ray Train uses) starts a ``TCPStore`` server on
    rank 0 that listens on every interface (``::``), whatever ``MASTER_ADDR`` says, with no
    authentication. When the master address is a loopback address (a cluster on this machine) the
    store is handed a socket bound to exactly that address (``TCPStore``'s ``master_listen_fd``):
    nothing changes for the ranks, which connect to that address anyway, and nothing listens beyond
    the machine. A master address elsewhere (a real multi-node cluster) is left as torch binds it.
    """
    import importlib
    import socket

    from predrnn.security import is_loopback

    # the module (``torch.distributed.rendezvous`` the attribute is a function of the same name)
    rendezvous = importlib.import_module("torch.distributed.rendezvous")

    tcp_store = rendezvous.TCPStore
    if getattr(tcp_store, "binds_loopback", False):
        return

    def store(host_name: str, port: int, world_size: int | None = None, is_master: bool = False,
              **kwargs: Any) -> Any:
        if is_master and port and kwargs.get("master_listen_fd") is None and is_loopback(host_name):
            family = socket.AF_INET6 if ":" in host_name else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host_name, port))
            sock.listen(1024)
            kwargs["master_listen_fd"] = sock.detach()  # the store owns the descriptor from here on
        return tcp_store(host_name, port, world_size, is_master, **kwargs)

    store.binds_loopback = True  # type: ignore[attr-defined]
    rendezvous.TCPStore = store  # type: ignore[attr-defined]


def setup_worker_process() -> None:
    """Ray's ``worker_process_setup_hook`` for every worker of our jobs: :func:`export_cluster_address` and
    :func:`bind_rendezvous_to_loopback`."""
    export_cluster_address()
    bind_rendezvous_to_loopback()


def _require_token_auth() -> None:
    """Refuse to start or join a Ray without token authentication (the door sets it up).

    Raises:
        SecurityError: ``RAY_AUTH_MODE`` is not ``token``, or no token is given.
    """
    from predrnn.security import SecurityError
    from predrnn.settings import ray_token_auth_on

    if not ray_token_auth_on():
        raise SecurityError("Ray needs token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (a "
                            "predrnn command does this with predrnn.security.ray_auth_env)")


def _local_only(on: bool) -> None:
    """Make Ray keep a cluster on this machine's loopback address (``on``), or resolve it to the external one.

    Ray turns ``127.0.0.1`` into the machine's external address and binds its GCS, raylet, workers and
    agents there (or on every interface), unless it runs as a single-machine cluster
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when :mod:`ray` is imported and again here for a Ray
    already imported). A local-only process can neither join nor be joined from another machine, so
    this is set only for a cluster on 127.0.0.1 (a local one, or the stack's head).
    """
    from ray._private import ray_constants

    from predrnn.settings import ray_process_env

    ray_process_env({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0" if on else "1"}, keep_given=False)
    ray_constants.ENABLE_RAY_CLUSTER = not on


def ensure_ray(address: str | None, *, num_cpus: int | None = None, temp_dir: str | Path | None = None,
               dashboard: bool = True) -> bool:
    """Connect to the cluster at ``address`` (``HOST:PORT``) or start a local one, with token authentication.

    A local cluster, and a cluster at ``127.0.0.1``/``localhost``, listen on the loopback address only
    (every Ray port: GCS, raylet, object manager, workers, agents, dashboard); a cluster elsewhere was
    asked for by its address and is joined as it is (its token is required all the same).

    Args:
        address: an existing cluster; None starts a local one (with its dashboard on 127.0.0.1, whose
            state API Ray Train's placement-group cleaner polls).
        num_cpus: CPUs of a local cluster; None: all of this machine's.
        temp_dir: a local cluster's session folder; a path too long for Ray's sockets is replaced by a
            fresh folder under the system temp dir.
        dashboard: start a local cluster's dashboard (Ray Train needs its state API; Ray Data does not,
            and a local cluster starts faster and smaller without it).

    Ray Train's controller polls its workers every 0.5 s instead of 2 s, and on a local cluster runs
    without its preemption watcher (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``,
    ``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER``; values already in the environment win): about 6 s less per
    training run on 2 cores.

    Returns:
        True when this call connected or started Ray (the caller shuts it down with :func:`shutdown`),
        False when the process was already connected.

    Raises:
        SecurityError: token authentication is not set up (``RAY_AUTH_MODE=token`` and a token).
    """
    import ray

    if ray.is_initialized():
        return False
    _require_token_auth()
    # the addresses Ray would turn into the external one (other loopback addresses, 127.0.0.2 say, it binds
    # as they are)
    _local_only(not address or address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]"))
    # Ray Train's controller reads its settings from the environment of the process that calls fit() (this
    # driver, or a Tune trial's worker). It polls its workers every 2 s by default, which adds up to 2 s at
    # each start and end of a worker group; and it runs an extra actor (a process) watching for node
    # preemption, which only a cluster with drained nodes needs. A value the user exported is kept.
    train_env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    if not address:
        train_env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    from predrnn.settings import ray_process_env

    train_env = ray_process_env(train_env)
    runtime_env = {"worker_process_setup_hook": setup_worker_process, "env_vars": train_env}
    if address:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING, runtime_env=runtime_env)
        return True
    temp = str(temp_dir) if temp_dir else ""
    if not temp or len(temp) > _MAX_TEMP_DIR:
        temp = tempfile.mkdtemp(prefix="predrnn-ray-")
    Path(temp).mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", _temp_dir=temp,
             log_to_driver=True, configure_logging=True, logging_level=logging.WARNING, runtime_env=runtime_env)
    return True


def shutdown(started: bool) -> None:
    """Disconnect from (or stop) Ray if :func:`ensure_ray` connected it."""
    if started:
        import ray

        ray.shutdown()


def disarm_native_abort() -> None:
    """Cancel the abort that Ray's native failure handler arms when the driver gets SIGTERM.

    On SIGTERM that handler sets a 3 s alarm whose expiry aborts the process (SIGABRT), however far the
    clean-up has got. Stopping training (closing the MLflow run, marking the flow run crashed, stopping
    Ray) takes longer than that on a busy machine, so the stop path cancels the alarm and finishes.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and hasattr(signal, "alarm"):
        signal.alarm(0)


def worker_resources(cfg: ExperimentConfig, extra: dict[str, float] | None = None) -> dict[str, float]:
    """Ray resources of one training worker: ``compute.cpus_per_worker`` CPUs, its GPUs, and ``extra``."""
    c = cfg.compute
    gpus = {"GPU": c.gpus_per_worker} if c.gpus_per_worker > 0 else {}
    return {"CPU": c.cpus_per_worker, **gpus, **(extra or {})}


def torch_trainer(train_loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], cfg: ExperimentConfig,
                  *, name: str, storage_path: str, storage_filesystem: Any = None, max_failures: int,
                  num_to_keep: int, score_attribute: str, callbacks: Sequence[Any] = (),
                  placement_strategy: str = "PACK", extra_resources: dict[str, float] | None = None) -> Any:
    """The ``TorchTrainer`` of one training run (a ``predrnn train`` run or one tuning trial).

    ``cfg.compute.num_workers`` DDP ranks (NCCL on GPUs, gloo on CPUs), each with
    :func:`worker_resources`; the run directory ``storage_path/name`` (``storage_filesystem``: a
    pyarrow filesystem for remote storage); ``max_failures`` worker-group restarts; the
    ``num_to_keep`` checkpoints with the lowest ``score_attribute``. Workers print their progress
    lines plainly (not through Train's print-to-logger tee).
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = cfg.compute.gpus_per_worker > 0
    return TorchTrainer(
        train_loop, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.compute.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=worker_resources(cfg, extra_resources),
                                     placement_strategy=placement_strategy),
        run_config=RunConfig(  # type: ignore[call-arg]  # Train V2's RunConfig (typed as V1's)
            name=name, storage_path=storage_path, storage_filesystem=storage_filesystem,
            callbacks=list(callbacks),
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
            logging_config=LoggingConfig(log_level="WARNING"),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep, checkpoint_score_attribute=score_attribute,
                                               checkpoint_score_order="min"),
        ),
    )
