"""The Ray cluster a batch runs on: join one at an address, or start a local one for the run.

agent/batch.py runs inside `cluster(...)`; benchmarks and tests use it the same way.
See docs/scale.md for `ray start --head` and token authentication.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tools.errors import FaceReasonError


@contextlib.contextmanager
def cluster(address: str | None = None, workers: int | None = None) -> Iterator[None]:
    """Join the Ray cluster at `address`, or start a local one with `workers` CPUs.

    A local cluster keeps its files in a temp dir removed afterwards, and gets a token of its
    own (Ray's token authentication stays on) unless one is configured, so nothing is left in
    /tmp/ray or ~/.ray. Inside an already initialised Ray (a notebook, the tests) it does nothing.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    common = {"logging_level": "ERROR", "log_to_driver": False}
    if address:
        hint = ("check that `ray start --head` runs there and, as its token authentication asks, "
                "that RAY_AUTH_MODE=token and the cluster's RAY_AUTH_TOKEN are set here "
                "(docs/scale.md)")
        host, _, port = address.rpartition(":")
        if host and port.isdigit() and "://" not in address:
            try:  # ray.init waits minutes on an address where nothing listens
                socket.create_connection((host, int(port)), timeout=10).close()
            except OSError as exc:
                raise FaceReasonError(f"nothing answers at {address} ({exc.strerror or exc}); "
                                      f"{hint}.", code="no_cluster") from None
        try:
            ray.init(address=address, **common)
        except ConnectionError as exc:
            raise FaceReasonError(f"could not join the Ray cluster at {address} ({exc}); {hint}.",
                                  code="no_cluster") from None
        try:
            yield
        finally:
            ray.shutdown()
        return
    temp = tempfile.mkdtemp(prefix="fr-ray-")
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").exists()):
        # Ray turns token mode on for a new local cluster and, finding no token, writes one to
        # ~/.ray/auth_token; given one in the environment (which its processes inherit), it
        # writes nothing. It stays set: Ray keeps the token it first read for the process's
        # later clusters.
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    try:
        ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, _temp_dir=temp,
                 **common)
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
