"""postillion policy: Postfix's smtpd_*_restrictions as an async decision engine.

Owns: PolicyContext (the facts of one decision), PolicyEngine (the parsed restriction
lists of one service) and PolicyEvent (what the session should log besides the reply).
Must not import: server, queue, cli, asyncio.  Uses config, tables and replies.
Follows: postconf(5) smtpd_*_restrictions and access(5), Postfix smtpd/smtpd_check.c.

    engine = PolicyEngine(params, params.config_dir)        # ConfigError on bad lists
    reply = await engine.check_recipient(ctx)               # Reply to send, or None
"""

from __future__ import annotations

from postillion.policy.context import EventSink, PolicyContext, PolicyEvent
from postillion.policy.engine import PolicyEngine

__all__ = ["EventSink", "PolicyContext", "PolicyEngine", "PolicyEvent"]
