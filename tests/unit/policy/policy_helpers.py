"""Helpers for policy tests: a real Params, a real engine, contexts with sane defaults."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from postillion.config import Params
from postillion.policy import PolicyContext, PolicyEngine, PolicyEvent

BASE = {"myhostname": "mx.example.test", "mydomain": "example.test"}
OUTSIDE = {"client_name": "client.remote.test", "client_addr": "203.0.113.5",
           "helo_name": "client.remote.test", "sender": "someone@remote.test"}


def make_engine(config_dir: Path | None = None, **values: str) -> PolicyEngine:
    params = Params.from_dict({**BASE, **values}, config_dir=config_dir or Path("."))
    return PolicyEngine(params, params.config_dir)


def ctx(**fields: Any) -> PolicyContext:
    return PolicyContext(**{**OUTSIDE, **fields})


def check(engine: PolicyEngine, stage: str, context: PolicyContext,
          events: list[PolicyEvent] | None = None) -> str | None:
    """Run one check; the reply as its wire line (without CRLF), or None."""
    method = getattr(engine, f"check_{stage}")
    reply = asyncio.run(method(context, on_event=events.append if events is not None else None))
    return None if reply is None else str(reply)
