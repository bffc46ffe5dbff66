from __future__ import annotations

from pathlib import Path

from postillion.config import compat

DOC = Path(__file__).resolve().parents[3] / "docs" / "compatibility.md"


def test_compatibility_doc_is_generated_from_the_registry() -> None:
    assert DOC.read_text() == compat.render(), (
        "docs/compatibility.md is stale: run `python -m postillion.config.compat > docs/compatibility.md`"
    )


def test_differences_are_marked() -> None:
    text = compat.render()
    assert "| `smtpd_forbid_unauth_pipelining` | `yes` **differs** | `no` |" in text
    assert "| `mail_owner` | `postillion` **differs** | `postfix` |" in text
