"""``unix:passwd.byname`` (and ``unix:group.byname``): the system account database.

Owns: lookups through the C library's getpwnam()/getgrnam().
Must not import: anything above ``errors`` and ``tables._base``.
Follows: DATABASE_README "unix" and Postfix dict_unix.c: the value is the passwd(5) or
group(5) line of the entry.

getpwnam() may block (NSS over the network); Postfix asks it from each smtpd process in
the same way.  The lookup is fast for files-based NSS, which is what local_recipient_maps
normally sees.
"""

from __future__ import annotations

import grp
import pwd
from pathlib import Path

from postillion.errors import ConfigError, TableLookupError
from postillion.tables._base import fold

_MAPS = ("passwd.byname", "group.byname")


class UnixTable:
    def __init__(self, name: str, config_dir: Path | None = None) -> None:
        self.spec = f"unix:{name}"
        if name not in _MAPS:
            raise ConfigError(f"unknown table: {name}", name=self.spec,
                              fix="use unix:passwd.byname or unix:group.byname")
        self._name = name

    async def lookup(self, key: str) -> str | None:
        key = fold(key)
        try:
            if self._name == "passwd.byname":
                pw = pwd.getpwnam(key)
                return ":".join((pw.pw_name, pw.pw_passwd, str(pw.pw_uid), str(pw.pw_gid),
                                 pw.pw_gecos, pw.pw_dir, pw.pw_shell))
            gr = grp.getgrnam(key)
            return ":".join((gr.gr_name, gr.gr_passwd, str(gr.gr_gid), ",".join(gr.gr_mem)))
        except KeyError:
            return None
        except (OSError, ValueError) as exc:
            # ValueError: embedded NUL in the key; OSError: NSS backend trouble.
            if isinstance(exc, ValueError):
                return None
            raise TableLookupError(f"{self.spec}: lookup of {key!r} failed: {exc}") from exc
