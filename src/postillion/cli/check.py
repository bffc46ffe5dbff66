"""`postillion -c DIR check`: validate main.cf, master.cf and smtpd.conf, Postfix-admin style.

Every error names file:line, the parameter, what is wrong and the fix; warnings flag risky but
legal setups.  Exit status 1 when there is an error (``start`` refuses such a config too).
"""

from __future__ import annotations

import sys
from pathlib import Path

from postillion.config import check_config


def main(config_dir: Path, argv: list[str]) -> int:
    diagnostics = check_config(config_dir)
    errors = [d for d in diagnostics if d.severity == "error"]
    for d in diagnostics:
        print(f"postillion: {d.severity}: {d.render()}", file=sys.stderr)
    if errors:
        print(f"postillion: {len(errors)} error(s) in {config_dir}", file=sys.stderr)
        return 1
    print(f"postillion: {config_dir}: configuration ok" + (f" ({len(diagnostics)} warning(s))" if diagnostics else ""))
    return 0
