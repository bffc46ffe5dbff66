"""The doctor's checklist: one ``Step`` per check, rendered as text or as JSON.

Owns: ``Step`` (name, ok, cause, fix, detail), ``render_text`` (``✔ step`` / ``✘ step`` with
the cause and the fix indented below) and ``render_json``.  A step that passed but deserves
attention (a certificate that expires soon, a PAM fallback) is ``ok`` with a ``cause``: it is
shown as a warning and does not change the exit status.
Must not import: anything else of postillion (plain values in, text out).
Follows: the layout of docs/doctor.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

PASS = "✔"
FAIL = "✘"
INDENT = "    "


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the checklist.  ``detail`` says what was seen when it passed."""

    name: str
    ok: bool
    cause: str | None = None
    fix: str | None = None
    detail: str | None = None

    @property
    def warning(self) -> bool:
        return self.ok and self.cause is not None


def passed(name: str, detail: str | None = None) -> Step:
    return Step(name, True, detail=detail)


def failed(name: str, cause: str, fix: str, detail: str | None = None) -> Step:
    return Step(name, False, cause=cause, fix=fix, detail=detail)


def warned(name: str, cause: str, fix: str, detail: str | None = None) -> Step:
    return Step(name, True, cause=cause, fix=fix, detail=detail)


def all_ok(steps: list[Step]) -> bool:
    return all(s.ok for s in steps)


def render_text(steps: list[Step], skipped: list[str] | None = None) -> str:
    lines: list[str] = []
    for s in steps:
        head = f"{PASS if s.ok else FAIL} {s.name}"
        if s.detail:
            head += f" ({s.detail})"
        lines.append(head)
        if s.cause is not None:
            lines.append(f"{INDENT}{'warning: ' if s.ok else ''}{s.cause}")
        if s.fix is not None:
            lines.append(f"{INDENT}fix: {s.fix}")
    for what in skipped or []:
        lines.append(f"- not checked: {what}")
    return "\n".join(lines) + "\n"


def render_json(steps: list[Step], skipped: list[str] | None = None) -> str:
    return json.dumps(
        {"ok": all_ok(steps), "steps": [asdict(s) for s in steps], "skipped": skipped or []},
        ensure_ascii=False,
    ) + "\n"
