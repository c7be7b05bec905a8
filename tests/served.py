"""``create_app`` on a real uvicorn server in a thread of this process, so a test can script the model."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn
from processes import free_port

from qwenvl_agent.server.app import ServerSettings, create_app


class Served:
    """The app served on loopback. ``ready``: wait until ``/health`` says the model is loaded."""

    def __init__(self, settings: ServerSettings, ready: bool = True):
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        if ready:
            self.wait_until_ready(deadline)

    def wait_until_ready(self, deadline: float) -> None:
        while httpx.get(f"{self.url}/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.05)

    @property
    def runtime(self):
        return self.app.state.llm.runtime

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
