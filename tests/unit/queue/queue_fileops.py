"""A FileOps seam for queue tests: real system calls, counted, with injected failures."""

from __future__ import annotations

from collections import Counter

from postillion.queue import safeio


class FailingOps(safeio.FileOps):
    """Real system calls, counted; ``fail`` = (op name, nth call) makes that call raise EIO.
    ``short`` makes every write() stop after that many bytes."""

    def __init__(self, fail: tuple[str, int] | None = None, short: int | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.fail = fail
        self.short = short

    def _step(self, name: str) -> None:
        self.calls[name] += 1
        if self.fail == (name, self.calls[name]):
            raise OSError(5, f"injected failure in {name}")

    def open(self, path, flags, mode):  # type: ignore[override]
        self._step("open")
        return super().open(path, flags, mode)

    def fstat(self, fd):  # type: ignore[override]
        self._step("fstat")
        return super().fstat(fd)

    def write(self, fd, data):  # type: ignore[override]
        self._step("write")
        return super().write(fd, data[: self.short] if self.short else data)

    def fsync(self, fd):  # type: ignore[override]
        self._step("fsync")
        super().fsync(fd)

    def close(self, fd):  # type: ignore[override]
        self._step("close")
        super().close(fd)

    def rename(self, src, dst):  # type: ignore[override]
        self._step("rename")
        super().rename(src, dst)

    def unlink(self, path):  # type: ignore[override]
        self._step("unlink")
        super().unlink(path)

    def fsync_dir(self, path):  # type: ignore[override]
        self._step("fsync_dir")
        super().fsync_dir(path)
