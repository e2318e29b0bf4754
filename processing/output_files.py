"""Writing result files safely: atomically (an interrupted or concurrent run never leaves half a file), into an output
folder checked to be writable before any work starts and removed again when a failed run leaves it empty."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Calls `write(handle)` on a temporary file beside `path`, then renames it to `path` (atomic on POSIX and Windows
    within one file system): readers see the old file or the complete new one, never a partial write.

    The temporary file is created with the usual permissions (0666 minus the umask) and removed if `write` fails.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json_atomically(path: str | os.PathLike, value) -> None:
    """`value` as indented UTF-8 JSON at `path`, written atomically."""
    write_atomically(path, lambda handle: handle.write(json.dumps(value, indent=2).encode("utf-8")))


def check_writable_file(path: str | os.PathLike) -> None:
    """Fails with an `OSError` naming `path` when a file cannot be written there (no such folder, not a folder, no
    permission), so that a long run fails before it starts rather than when it saves its result."""
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise OSError(f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist.")
    if Path(path).is_dir():
        raise OSError(f"cannot write {str(path)!r}: it is a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable.")


class OutputFolder:
    """`with OutputFolder(path) as folder:` creates `path` (and missing parents), checks that a file can be created
    in it, and on exit removes the folders it created if they are still empty (a failed run leaves nothing behind).

    Raises:
        OSError: the folder cannot be created or written to; the message names it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._created: list[Path] = []

    def __enter__(self) -> Path:
        missing = []
        folder = self.path.absolute()
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        if self.path.exists() and not self.path.is_dir():
            raise OSError(f"output folder {str(self.path)!r} exists and is not a folder.")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._created = missing  # innermost first
            probe = self.path / f".possam-write-test.{os.getpid()}.{secrets.token_hex(4)}"
            probe.touch(exist_ok=False)
            probe.unlink()
        except OSError as error:
            self._remove_empty_created()
            raise OSError(f"output folder {str(self.path)!r} is not writable: {error.strerror or error}.") from None
        return self.path

    def __exit__(self, *exc_info) -> bool:
        self._remove_empty_created()
        return False

    def _remove_empty_created(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()  # only succeeds on an empty folder
            except OSError:
                break
