"""Which sockets the processes a test started listen on, and whether any is reachable from outside."""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable, Iterable

import psutil


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:  # [::ffff:127.0.0.1]
        addr = addr.ipv4_mapped
    return addr.is_loopback


def family(root_pids: Iterable[int]) -> set[int]:
    """``root_pids`` and every live process below them."""
    out: set[int] = set()
    for pid in root_pids:
        try:
            proc = psutil.Process(pid)
            out.add(pid)
            out.update(c.pid for c in proc.children(recursive=True))
        except psutil.Error:
            continue
    return out


def group_family(pgids: Iterable[int]) -> set[int]:
    """Every live process of the process groups ``pgids`` (a stack's services) and everything below them."""
    wanted = set(pgids)
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.info["pid"]) in wanted:
                members.append(proc.info["pid"])
        except OSError:
            continue
    return family(members)


def listening(pids: set[int]) -> list[tuple[int, str, str, int]]:
    """``[(pid, process name, ip, port)]`` of every TCP socket in LISTEN state held by ``pids``."""
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or conn.pid not in pids or not conn.laddr:
            continue
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.Error:
            name = "?"
        out.append((conn.pid, name, conn.laddr.ip, conn.laddr.port))
    return out


def exposed(pids: set[int]) -> list[tuple[int, str, str, int]]:
    """The listening sockets of ``pids`` that are not on a loopback address (0.0.0.0, ::, an external IP)."""
    return [entry for entry in listening(pids) if not _loopback(entry[2])]


class Watch:
    """Sample the listening sockets below ``root_pids`` (or of the processes ``pids()`` names) every ``every_s``
    seconds while a block runs.

    ``seen`` collects every listener observed, ``outside`` those not on loopback.
    """

    def __init__(self, root_pids: Iterable[int] = (), every_s: float = 0.5,
                 pids: Callable[[], set[int]] | None = None) -> None:
        roots = list(root_pids)
        self.pids = pids or (lambda: family(roots))
        self.every_s = every_s
        self.seen: set[tuple[str, str, int]] = set()
        self.outside: set[tuple[str, str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        for _pid, name, ip, port in listening(self.pids()):
            self.seen.add((name, ip, port))
            if not _loopback(ip):
                self.outside.add((name, ip, port))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
