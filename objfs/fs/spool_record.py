"""The sidecar of a spool file: what a later mount needs to store it if this one dies.

Next to each spool file ``objfs-XXXX.spool`` a small JSON record ``objfs-XXXX.spool.json``
names the object it is meant for (bucket, name), the version it started from (``base``: nuid
and revision, or none for a new file), the meta to store with it, and its state:

- ``complete``: the content is a version a close, fsync or unmount meant to store. It is
  written before the upload of a large spool and after any failed upload
  (``spool.RECORD_BEFORE_UPLOAD``), and cleared (rewritten) by the first write after it, so a
  file still being written when the daemon died is recognised and never stored half-done (a
  spool without a record is kept, never stored).
- ``synced``: the spool file and the record were fsynced after an upload failed, so the data
  survives a power loss too; without it the content is trusted only on the same boot (a
  killed process leaves its writes in the page cache, a reboot may not).
- ``boot_id``: the kernel's boot id when the record was written (see ``synced``).

The record is written atomically (write a temporary file, rename it over the old one;
fsync both and the directory when ``synced``), so a reader sees either the old or the new
record, never a torn one. The spool file is written first and the record last.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from objfs.store.api import ObjectInfo, ObjectMeta

SUFFIX = ".json"
VERSION = 1


@functools.cache
def boot_id() -> str:
    """This boot's id (empty where the kernel does not say). Read once: it cannot change
    while the process lives, and every close of a written file would read /proc again."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass
class Base:
    """The object version a spool's content started from."""

    nuid: str
    revision: int


@dataclass
class SpoolRecord:
    bucket: str
    name: str
    base: Base | None
    size: int
    complete: bool
    headers: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    synced: bool = False
    boot_id: str = ""
    version: int = VERSION

    @classmethod
    def of(
        cls, bucket: str, name: str, base: ObjectInfo | None, meta: ObjectMeta, size: int
    ) -> SpoolRecord:
        return cls(
            bucket=bucket,
            name=name,
            base=Base(base.nuid, base.revision) if base is not None else None,
            size=size,
            complete=True,
            headers={k: list(v) for k, v in meta.headers.items()},
            description=meta.description,
            metadata=dict(meta.metadata),
            boot_id=boot_id(),
        )

    @property
    def meta(self) -> ObjectMeta:
        return ObjectMeta(self.description, dict(self.headers), dict(self.metadata))


def path_for(spool_path: Path) -> Path:
    return spool_path.with_name(spool_path.name + SUFFIX)


def write(spool_path: Path, record: SpoolRecord, *, sync: bool = False) -> None:
    """Replace the record of ``spool_path`` atomically (durably with ``sync``)."""
    target = path_for(spool_path)
    tmp = target.with_name(target.name + ".tmp")
    data = json.dumps(asdict(record), sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    if sync:
        dfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read(spool_path: Path) -> SpoolRecord | None:
    """The record of ``spool_path``; None if there is none or it cannot be read."""
    try:
        raw: Any = json.loads(path_for(spool_path).read_bytes())
        base = raw.get("base")
        raw["base"] = Base(str(base["nuid"]), int(base["revision"])) if base else None
        return SpoolRecord(**raw)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def remove(spool_path: Path) -> None:
    target = path_for(spool_path)
    for p in (target, target.with_name(target.name + ".tmp")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
