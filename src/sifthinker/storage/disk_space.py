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


# How libraries that do their own I/O report ENOSPC without an OSError: safetensors (Rust's StorageFull,
# "os error 28"), torch.save ("No space left on device" in its RuntimeError when the OS says so).
_FULL_MESSAGES = ("No space left on device", "os error 28", "StorageFull", "Disk quota exceeded")


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC/EDQUOT, as an OSError or in the message of an error raised for it, here or in its causes."""
    seen: BaseException | None = e
    for _ in range(8):  # the __cause__ / __context__ chain, bounded
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(m in str(seen) for m in _FULL_MESSAGES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full(e: BaseException, folder: Path | str, need_bytes: float | None, what: str) -> DiskFullError:
    """The error for ``e`` (ENOSPC) while writing under ``folder``; ``need_bytes``: the estimate of what the
    work still writes (None: unknown)."""
    folder = Path(folder)
    probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(probe)
    need = f"about {human(need_bytes)} more is needed to finish" if need_bytes else "more is needed to finish"
    filename = getattr(e, "filename", None)
    target = filename or folder
    writing = f" while writing {filename}" if filename else ""
    return DiskFullError(f"no space left on the filesystem of {folder}{writing}: "
                         f"{human(usage.free)} free of {human(usage.total)}, {need}; free space (or write {what} "
                         f"elsewhere) and run the same command again: finished work is kept",
                         str(target))
