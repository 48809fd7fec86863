"""Mirror a trainer's published model versions into a local registry folder, for a decoder on a
machine that shares no volume with the trainer: `mcrave serve decoder --pull-from HOST:PORT`.

A background thread asks the trainer for its versions every few seconds and fetches the missing
ones (names and file names checked, every file sha256-checked, size capped, staged and renamed
into place by the SDK's `TrainerClient.fetch`); the decoder's own registry polling then loads
them, exactly as it would a local publish. Weights fetched in plaintext off loopback could be
swapped on the way, so that takes `--insecure`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from mcrave_client.connection import Connection, is_loopback
from mcrave_client.errors import ClientError
from mcrave_client.trainer import TrainerClient, check_model_name

log = logging.getLogger(__name__)


class RegistryMirror:
    def __init__(self, connection: Connection, models: Path, interval_s: float = 2.0) -> None:
        self.client = TrainerClient(connection)
        self.models = models
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sync_once(self) -> list[Path]:
        """Fetch every version the trainer has and this folder lacks; returns what was added."""
        added = []
        for v in self.client.versions():
            try:
                check_model_name(v.name)
                if (self.models / v.name / str(v.version)).is_dir():
                    continue
                added.append(self.client.fetch(v.name, v.version, self.models))
            except ClientError as err:  # one bad version must not stop the others
                log.warning("not pulling %r v%d: %s", v.name, v.version, err)
                continue
            log.info("pulled %s/%d from %s", v.name, v.version, self.client.connection.target)
        return added

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except ClientError as err:  # trainer down or refusing: keep serving, retry later
                log.warning("pull from trainer failed: %s", err)
            self._stop.wait(self.interval_s)

    def start(self) -> RegistryMirror:
        self._thread = threading.Thread(target=self._run, name="registry-pull", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.client.close()


def start_mirror(
    target: str,
    models: Path,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    token_file: str | None = None,
    *,
    insecure: bool = False,
) -> RegistryMirror:
    """Pull once now (so the decoder starts with the published models), then keep pulling.

    The decoder's own --tls-* files double as the client's (same CA; its certificate for mTLS).
    """
    path = lambda p: Path(p) if p else None  # noqa: E731
    if not tls_ca and not insecure and ":" in target and not is_loopback(target):
        raise ValueError(
            f"--pull-from {target}: plaintext off loopback (models could be swapped on the way): "
            "give --tls-ca (the trainer's CA), or --insecure to pull anyway"
        )
    try:
        conn = Connection.from_files(target, path(tls_ca), path(tls_cert) if tls_ca else None,
                                     path(tls_key) if tls_ca else None, path(token_file))  # fmt: skip
    except ClientError as err:  # the CLI reports ValueErrors as one line, exit 2
        raise ValueError(f"--pull-from {target}: {err}") from None
    models.mkdir(parents=True, exist_ok=True)
    mirror = RegistryMirror(conn, models)
    try:
        mirror.sync_once()
    except ClientError as err:
        log.warning("initial pull from %s failed (will retry): %s", target, err)
    return mirror.start()
