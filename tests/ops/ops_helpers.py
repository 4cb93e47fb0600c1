"""Shared pieces of the operations tests (a module of its own: test files never import conftest)."""

from __future__ import annotations

import http.server
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from infra.stack import Stack, StackSettings

TINY = [
    "data.img_height=32", "data.img_width=32", "data.input_length=4", "data.total_length=8",
    "model.patch_size=4", "model.num_hidden=[8]", "model.filter_size=3",
    "optim.batch_size=4", "optim.max_iterations=8", "optim.eval_interval=4", "optim.checkpoint_interval=4",
    "optim.eval_clips=8", "optim.keep_best=2",
    "sampling.r_sampling_step_1=2", "sampling.r_sampling_step_2=12", "sampling.r_exp_alpha=3",
]


def make_stack(services: list[str]) -> Stack:
    """A stack with free ports under a fresh temporary folder."""
    root = Path(tempfile.mkdtemp(prefix="predrnn-stack-"))
    return Stack(StackSettings(state_dir=root, services=services).with_free_ports())


class Receiver:
    """An HTTP receiver on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        got: list[tuple[str, dict[str, Any]]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                size = int(self.headers.get("content-length", 0))
                got.append((self.path, json.loads(self.rfile.read(size))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.got = got
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def wait(self, count: int, timeout: float = 90.0) -> list[tuple[str, dict[str, Any]]]:
        t0 = time.monotonic()
        while len(self.got) < count:
            assert time.monotonic() - t0 < timeout, f"{len(self.got)} of {count} notifications after {timeout} s"
            time.sleep(0.2)
        return list(self.got)

    def wait_for(self, text: str, timeout: float = 90.0) -> dict[str, Any]:
        """The first body POSTed whose ``subject`` holds ``text``, waiting up to ``timeout`` s for it."""
        t0 = time.monotonic()
        while True:
            found = [note for _, note in self.got if text in str(note.get("subject", ""))]
            if found:
                return found[0]
            assert time.monotonic() - t0 < timeout, f"no notification about {text!r} after {timeout} s: {self.got}"
            time.sleep(0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
