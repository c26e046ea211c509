"""A real ``redis-server`` (Debian package) on 127.0.0.1, a free port and a temporary
directory, configured by the same redis.conf the operators get (`contimg state redis-conf`)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from contimg_dask.config.schema import RedisStateConfig
from contimg_dask.state.redis_server import render_redis_conf
from contimg_dask.testing.cluster import free_port


class RedisProcess:
    """Start with :meth:`start`, stop with :meth:`stop` (SIGKILL with ``kill=True``); the
    data directory survives a restart."""

    def __init__(self, directory: Path, settings: RedisStateConfig) -> None:
        self.directory = directory
        self.settings = settings
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "redis.conf"
        self.conf.write_text(render_redis_conf(settings, directory, port=self.port))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen([binary, str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        password = self.settings.password
        client = redis.Redis(port=self.port,
                             password=password.get_secret_value() if password else None,
                             username=self.settings.username)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start (see {self.conf})") from None
            time.sleep(0.02)
        client.close()
        return self

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=30)
        self.process = None
