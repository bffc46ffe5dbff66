"""`postillion -c DIR init [--hostname H] [--ports BASE]`: write a working configuration.

Owns: the embedded defaults an admin starts from: main.cf, master.cf (an `smtp` service, the
Postfix recipe's `submission` service and an implicit-TLS `smtps` one), sasl/smtpd.conf
(our user store), a self-signed certificate, and the data directory (spool, user store, log).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from postillion import certs
from postillion.server import privileges

MAIN_CF = """\
# postillion main.cf: Postfix syntax and parameter names.
# `postillion -c {dir} postconf -d` lists every default; `postconf -n` what is set here.

myhostname = {hostname}
mydestination = $myhostname, localhost.$mydomain, localhost
mynetworks = 127.0.0.0/8 [::1]/128
# Local mail goes to ~/Maildir/ (Postfix's default, empty, is an mbox in /var/mail).
home_mailbox = Maildir/

# The unprivileged user that runs the network-facing processes.
mail_owner = {mail_owner}

data_directory = {data}
queue_directory = $data_directory/spool
maillog_file = $data_directory/maillog
postillion_user_database = $data_directory/users.sqlite

# TLS: STARTTLS offered on port 25, required on submission (see master.cf).
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1

# SASL: Cyrus-style; sasl/smtpd.conf says how passwords are checked.
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_authenticated_header = yes

# Used by the submission service in master.cf (the Postfix recipe).
mua_client_restrictions = permit_sasl_authenticated, reject
mua_helo_restrictions =
mua_sender_restrictions =
"""

MASTER_CF_HEADER = """\
# postillion master.cf: Postfix columns. Service names may be `host:port`.
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
"""
SERVICE_LINE = "{name:<10} inet  n       -       n       -       -       smtpd\n"
# The queue manager delivers what smtpd queued (one process, with the delivery agents).
QMGR_LINE = "qmgr       unix  n       -       n       300     1       qmgr\n"
# local(8) as root (unpriv = n): it switches to each recipient's rights (Postfix's line).
LOCAL_LINE = "local      unix  -       n       n       -       -       local\n"
# The Postfix submission recipe's overrides after its TLS setting, shared by 587 and 465.
MUA_OVERRIDES = (
    "smtpd_sasl_auth_enable=yes",
    "smtpd_client_restrictions=$mua_client_restrictions",
    "smtpd_helo_restrictions=$mua_helo_restrictions",
    "smtpd_sender_restrictions=$mua_sender_restrictions",
    "smtpd_recipient_restrictions=permit_sasl_authenticated,reject",
    "milter_macro_daemon_name=ORIGINATING",
)


def master_cf(names: dict[str, str]) -> str:
    def service(name: str, *overrides: str) -> str:
        return SERVICE_LINE.format(name=name) + "".join(f"  -o {o}\n" for o in overrides)

    return (
        MASTER_CF_HEADER
        + service(names["smtp"])
        + service(names["submission"], "syslog_name=postfix/submission",
                  "smtpd_tls_security_level=encrypt", *MUA_OVERRIDES)
        + service(names["smtps"], "syslog_name=postfix/smtps", "smtpd_tls_wrappermode=yes",
                  *MUA_OVERRIDES)
        + QMGR_LINE
        + LOCAL_LINE
    )


SMTPD_CONF = """\
# Cyrus SASL application config for smtpd (smtpd_sasl_path = smtpd).
# auxprop + postillion = the embedded user store (`postillion user add NAME`).
# For saslauthd (PAM), use instead:
#   pwcheck_method: saslauthd
#   saslauthd_path: /var/run/saslauthd/mux
# SCRAM needs the user store's keys: with saslauthd, list only PLAIN LOGIN.
pwcheck_method: auxprop
auxprop_plugin: postillion
mech_list: SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN
"""


def main(config_dir: Path, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="postillion init")
    parser.add_argument("--hostname", default=None, help="myhostname (default: this host's FQDN)")
    parser.add_argument(
        "--ports",
        default=None,
        metavar="BASE",
        help="listen on 127.0.0.1:BASE+25 / +587 / +465 instead of ports 25, 587, 465 "
        "(the default when not run as root)",
    )
    parser.add_argument("--mail-owner", default="postillion")
    parser.add_argument("--force", action="store_true", help="overwrite an existing main.cf/master.cf")
    opts = parser.parse_args(argv)
    hostname = opts.hostname or socket.getfqdn() or "localhost"
    main_cf = config_dir / "main.cf"
    if main_cf.exists() and not opts.force:
        print(f"postillion: {main_cf} exists; keeping it (use --force to overwrite)", file=sys.stderr)
        return 1
    is_root = os.geteuid() == 0
    base = int(opts.ports) if opts.ports is not None else (None if is_root else 10000)
    if base is None:
        names = {"smtp": "smtp", "submission": "submission", "smtps": "smtps"}
    else:
        names = {
            "smtp": f"127.0.0.1:{base + 25}",
            "submission": f"127.0.0.1:{base + 587}",
            "smtps": f"127.0.0.1:{base + 465}",
        }
    data = config_dir / "data"
    tls_dir = config_dir / "tls"
    for d in (config_dir, config_dir / "sasl", tls_dir, data, data / "spool"):
        d.mkdir(parents=True, exist_ok=True)
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    if not cert.exists() or not key.exists():
        certs.make_self_signed(hostname, cert, key)
    mail_owner = opts.mail_owner
    if is_root:
        privileges.ensure_mail_owner(mail_owner)
    main_cf.write_text(
        MAIN_CF.format(dir=config_dir, hostname=hostname, mail_owner=mail_owner, data=data, cert=cert, key=key)
    )
    (config_dir / "master.cf").write_text(master_cf(names))
    smtpd_conf = config_dir / "sasl" / "smtpd.conf"
    if not smtpd_conf.exists() or opts.force:
        smtpd_conf.write_text(SMTPD_CONF)
    if is_root:
        privileges.chown_tree(data, mail_owner)
        privileges.chown_tree(key, mail_owner)
    print(f"postillion: wrote {config_dir} (myhostname = {hostname})")
    for svc, name in names.items():
        print(f"  {svc:<10} {name}")
    return 0
