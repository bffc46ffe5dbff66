"""Our regexp:/pcre: tables answer like Postfix's ``postmap -q KEY type:FILE``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from postillion.tables import open_table

pytestmark = pytest.mark.interop

REGEXP = r"""# header_checks-like rules
/^Subject: (.*) spam/  REJECT got $1 ${1} $(1) $$ end
/a(b)?c/  X=$1=
if /^if/
/^ifx/ IN-IF
endif
/^cont/ first
  second
/[[:digit:]]+x/ DIG
/x$/ DOLLAR
/^y.z$/ DOT
/^Sens/i SENS
/ab c/x BASIC
/\.dot/ ESCAPED
/^(foo|foobar)x/ ALT $1
!/^n/ NOT-N
"""
PCRE = r"""/x$/ DOLLAR
/^m1.z$/s M1
/[[:digit:]]+d/ DIG
/\bword\b/ WORD
/^(?<n>abc)/ NAMED $1
/^t\Qa.b\E/ QUOTE
/^h\x{41}/ HEX
/end\z/ ENDZ
/^(?!owner-)(.*)-outgoing@(.*)/ USE ${1}@${2}
/b/A ANCHORED
/ a b /x EXT
"""
KEYS = ["Subject: buy spam", "abc", "ac", "n", "q", "ifx", "cont", "12x", "ax\n", "y\nz",
        "Sens", "sens", "ab c", "abc", "x.dot", "xdot", "foobarx", "ax", "m1\nz", "12d",
        "a word here", "abcdef", "ta.b", "taxb", "hA", "end\n", "end", "list-outgoing@x.org",
        "owner-list-outgoing@x.org", "b", "ab", "xaby"]


def postmap(cf: Path, key: str, spec: str) -> str | None:
    out = subprocess.run(["postmap", "-c", str(cf), "-q", key, spec], capture_output=True, timeout=30)
    if out.returncode == 1:
        return None
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().rstrip("\n")


@pytest.mark.parametrize(("kind", "rules"), [("regexp", REGEXP), ("pcre", PCRE)])
def test_same_answers_as_postmap(tmp_path: Path, kind: str, rules: str) -> None:
    if shutil.which("postmap") is None:
        pytest.skip("postmap (Debian postfix) is not installed")
    (tmp_path / "main.cf").write_text("")
    types = subprocess.run(["postconf", "-c", str(tmp_path), "-m"], capture_output=True, text=True)
    if kind not in types.stdout.split():
        pytest.skip(f"postfix-{kind} is not installed")
    (tmp_path / "t").write_text(rules)
    ours = open_table(f"{kind}:t", tmp_path)
    for key in KEYS:
        assert ours.match(key) == postmap(tmp_path, key, f"{kind}:{tmp_path / 't'}"), key
