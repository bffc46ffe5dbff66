"""Connection cache for delivery agents: idle sessions kept open, looked up by label.

Owns: holding idle, already-greeted sessions under one or more labels (Postfix stores one
under its next-hop label and its endpoint label), handing each out to one caller at a time,
and closing those that stay unused longer than smtp_connection_cache_time_limit.  It knows
nothing about SMTP: an entry only needs ``async aclose()`` (for SMTP: QUIT, then hang up).
Must not import: smtp, config, server.
Follows: Postfix scache(8) semantics as used by smtp(8) (smtp_reuse.c): an entry is removed
from every label when it is taken or expires; lookups never block.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    async def aclose(self) -> None: ...


S = TypeVar("S", bound=Closable)


class _Entry(Generic[S]):
    __slots__ = ("session", "labels", "timer", "loop")

    def __init__(self, session: S, labels: tuple[str, ...], loop: asyncio.AbstractEventLoop) -> None:
        self.session = session
        self.labels = labels
        self.loop = loop
        self.timer: asyncio.TimerHandle | None = None


class ConnectionCache(Generic[S]):
    """Idle sessions by label; ``idle_limit`` seconds after ``store()`` an unused one is closed."""

    def __init__(self, idle_limit: float) -> None:
        self.idle_limit = idle_limit
        self._by_label: dict[str, list[_Entry[S]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len({id(e) for entries in self._by_label.values() for e in entries})

    def store(self, session: S, labels: tuple[str, ...]) -> None:
        """Keep ``session`` for later; call from inside the running event loop."""
        loop = asyncio.get_running_loop()
        entry = _Entry(session, tuple(dict.fromkeys(labels)), loop)
        for label in entry.labels:
            self._by_label.setdefault(label, []).append(entry)
        entry.timer = loop.call_later(self.idle_limit, self._expire, entry)

    def take(self, label: str) -> S | None:
        """The most recently stored session under ``label`` (removed from the cache), or None."""
        entries = self._by_label.get(label)
        while entries:
            entry = entries[-1]
            self._unlink(entry)
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if entry.loop is running and not entry.loop.is_closed():
                return entry.session
            # A session from an event loop that is gone cannot be used (or closed) any more.
            entries = self._by_label.get(label)
        return None

    def _unlink(self, entry: _Entry[S]) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        for label in entry.labels:
            entries = self._by_label.get(label, [])
            if entry in entries:
                entries.remove(entry)
            if not entries:
                self._by_label.pop(label, None)

    def _expire(self, entry: _Entry[S]) -> None:
        self._unlink(entry)
        task = entry.loop.create_task(entry.session.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every cached session now (QUIT), e.g. when the queue manager stops."""
        entries = {id(e): e for es in self._by_label.values() for e in es}
        for entry in entries.values():
            self._unlink(entry)
        await asyncio.gather(*(e.session.aclose() for e in entries.values()), *self._closing,
                             return_exceptions=True)
