"""postillion postconf: output compared with golden files made by Postfix 3.7's postconf.

cases/NAME.cf is a main.cf; NAME.ref is `postconf -n`, NAME.x.ref is `postconf -nx` (Postfix's
output, minus the `config_directory` line that -c adds).  cases/submission.master.cf goes with
submission.{M,Mf,P,Px,F}.ref.  The interop tests run the real postconf on the same files.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from postillion.cli.postconf import main

CASES = Path(__file__).parent / "cases"
POSTCONF = Path("/usr/sbin/postconf")
MAIN_CASES = sorted(p.stem for p in CASES.glob("*.cf") if not p.name.endswith(".master.cf"))
SUBMISSION_MAIN = "mua_client_restrictions = permit_sasl_authenticated, reject\n"
MASTER_VIEWS = [("-M", "M"), ("-Mf", "Mf"), ("-P", "P"), ("-Px", "Px"), ("-F", "F")]


def run(config_dir: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(config_dir, list(argv), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def make_dir(tmp_path: Path, main_cf: str, master_cf: str = "") -> Path:
    (tmp_path / "main.cf").write_text(main_cf)
    (tmp_path / "master.cf").write_text(master_cf)
    return tmp_path


@pytest.mark.parametrize("case", MAIN_CASES)
@pytest.mark.parametrize(("flag", "suffix"), [("-n", ".ref"), ("-nx", ".x.ref")])
def test_main_cf_golden(tmp_path: Path, case: str, flag: str, suffix: str) -> None:
    d = make_dir(tmp_path, (CASES / f"{case}.cf").read_text())
    rc, out, _ = run(d, flag)
    assert rc == 0
    assert out == (CASES / f"{case}{suffix}").read_text()


@pytest.mark.parametrize(("flag", "ref"), MASTER_VIEWS)
def test_master_cf_golden(tmp_path: Path, flag: str, ref: str) -> None:
    d = make_dir(tmp_path, SUBMISSION_MAIN, (CASES / "submission.master.cf").read_text())
    rc, out, _ = run(d, flag)
    assert (rc, out) == (0, (CASES / f"submission.{ref}.ref").read_text())


def test_named_parameters_and_unknown_warning(tmp_path: Path) -> None:
    d = make_dir(tmp_path, "myhostname = mx.example.test\nrelay_domains =\n")
    assert run(d, "myhostname", "mydomain", "relay_domains", "nosuch") == (
        0, "myhostname = mx.example.test\nmydomain = example.test\nrelay_domains =\n",
        "postconf: warning: nosuch: unknown parameter\n")
    assert run(d, "-h", "smtpd_banner")[1] == "$myhostname ESMTP $mail_name\n"
    assert run(d, "-hx", "smtpd_banner")[1] == "mx.example.test ESMTP Postfix\n"
    assert run(d, "-d", "mail_owner", "smtpd_relay_restrictions")[1] == (
        "mail_owner = postillion\nsmtpd_relay_restrictions = permit_mynetworks, "
        "permit_sasl_authenticated, defer_unauth_destination\n")
    assert run(d, "-n", "myhostname", "biff")[1] == "myhostname = mx.example.test\n"


def test_all_parameters_are_sorted_and_unexpanded(tmp_path: Path) -> None:
    d = make_dir(tmp_path, "myhostname = mx.example.test\n")
    rc, out, _ = run(d)
    lines = out.splitlines()
    names = [line.split(" ")[0] for line in lines]
    assert rc == 0 and names == sorted(names) and len(names) > 800
    assert "smtpd_banner = $myhostname ESMTP $mail_name" in lines
    assert "postillion_worker_processes = 0" in lines
    assert "relay_domains =" in lines


def test_edit_remove_comment(tmp_path: Path) -> None:
    d = make_dir(tmp_path, "# top\na = 1\n  cont\nb = 2\n")
    assert run(d, "-e", "a=9", "c = x y") == (0, "", "")
    assert (d / "main.cf").read_text() == "# top\na = 9\nb = 2\nc = x y\n"
    assert run(d, "-X", "b")[0] == 0
    assert run(d, "-#", "c")[0] == 0
    assert (d / "main.cf").read_text() == "# top\na = 9\n#c = x y\n"
    assert run(d, "-e", "novalue") == (
        1, "", "postconf: fatal: missing '=' after attribute name: \"novalue\"\n")


def test_sasl_types(tmp_path: Path) -> None:
    assert run(tmp_path, "-a") == (0, "cyrus\ndovecot\n", "")
    assert run(tmp_path, "-A") == (0, "cyrus\n", "")


def test_master_filters(tmp_path: Path) -> None:
    d = make_dir(tmp_path, "", (CASES / "submission.master.cf").read_text())
    rc, out, err = run(d, "-M", "smtp/inet", "nosuch")
    assert out.splitlines() == [
        "smtp       inet  n       -       y       -       -       smtpd",
        "smtp       inet  n       -       n       -       5       smtpd"]
    assert err == 'postconf: warning: unmatched request: "nosuch"\n'
    assert run(d, "-P", "relay/unix/syslog_name")[1] == \
        "relay/unix/syslog_name = postfix/$service_name\n"
    assert run(d, "-xP", "relay/unix/syslog_name")[1] == \
        "relay/unix/syslog_name = postfix/relay\n"
    assert run(d, "-F", "pickup/unix/wakeup")[1] == "pickup/unix/wakeup = 60\n"


def test_missing_main_cf_is_fatal(tmp_path: Path) -> None:
    assert run(tmp_path, "-n") == (
        1, "", f"postconf: fatal: open {tmp_path}/main.cf: No such file or directory\n")


# --- against the real Postfix postconf ------------------------------------------------------

needs_postfix = pytest.mark.skipif(not POSTCONF.exists(), reason="Postfix postconf not installed")


def real_postconf(config_dir: Path, *argv: str) -> tuple[int, str]:
    proc = subprocess.run([str(POSTCONF), "-c", str(config_dir), *argv],
                          capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout


@pytest.mark.interop
@needs_postfix
@pytest.mark.parametrize("case", MAIN_CASES)
@pytest.mark.parametrize("flag", ["-n", "-nx", "-nh"])
def test_interop_main(tmp_path: Path, case: str, flag: str) -> None:
    d = make_dir(tmp_path, (CASES / f"{case}.cf").read_text())
    # With -c, postconf adds config_directory to -n output; so do we.
    assert run(d, "-c", str(d), flag)[:2] == real_postconf(d, flag)


@pytest.mark.interop
@needs_postfix
@pytest.mark.parametrize(("flag", "_ref"), MASTER_VIEWS)
def test_interop_master(tmp_path: Path, flag: str, _ref: str) -> None:
    d = make_dir(tmp_path, SUBMISSION_MAIN, (CASES / "submission.master.cf").read_text())
    assert run(d, flag)[:2] == real_postconf(d, flag)


@pytest.mark.interop
@needs_postfix
def test_interop_debian_master_cf(tmp_path: Path) -> None:
    shipped = Path("/usr/share/postfix/master.cf.dist")
    if not shipped.exists():
        pytest.skip("no Debian master.cf.dist")
    d = make_dir(tmp_path, "", shipped.read_text())
    for flag in ("-M", "-Mf", "-P", "-F"):
        assert run(d, flag)[:2] == real_postconf(d, flag), flag


@pytest.mark.interop
@needs_postfix
def test_interop_named_defaults_we_share(tmp_path: Path) -> None:
    d = make_dir(tmp_path, "")
    names = ["smtpd_banner", "myorigin", "mydestination", "smtpd_tls_key_file",
             "message_size_limit", "smtpd_sasl_path", "local_recipient_maps", "biff",
             "myhostname", "mydomain"]
    assert run(d, "-d", *names)[:2] == real_postconf(d, "-d", *names)
