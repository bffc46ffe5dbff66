"""Pure message fixups done before queueing: the Received: header and missing headers.

Re-exports the public names only; importing has no side effects.
"""

from postillion.cleanup.headers import add_missing_headers, mail_date
from postillion.cleanup.received import received_header

__all__ = ["add_missing_headers", "mail_date", "received_header"]
