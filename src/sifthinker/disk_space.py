"""A full disk as one clear error: which filesystem, what was being written, how much is free and how
much more the work needs (estimated from what it already wrote), and that a rerun resumes."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


class DiskFullError(OSError):
    """ENOSPC with the path, the free space and the space still needed in its message."""

    def __init__(self, message: str, filename: str | None = None) -> None:
        super().__init__(errno.ENOSPC, message, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(e: OSError, folder: Path | str, need_bytes: float | None, what: str) -> DiskFullError:
    """The error for ``e`` (ENOSPC) while writing under ``folder``; ``need_bytes``: the estimate of what the
    work still writes (None: unknown)."""
    folder = Path(folder)
    probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(probe)
    need = f"about {human(need_bytes)} more is needed to finish" if need_bytes else "more is needed to finish"
    target = e.filename or folder
    writing = f" while writing {e.filename}" if e.filename else ""
    return DiskFullError(f"no space left on the filesystem of {folder}{writing}: "
                         f"{human(usage.free)} free of {human(usage.total)}, {need}; free space (or write {what} "
                         f"elsewhere) and run the same command again: finished work is kept",
                         str(target))
