"""The doctor's running order: pick the service, then walk the recipe's "Test" section.

Owns: ``choose_service`` (``--service``: a master.cf name, its port, its syslog_name tail, or
``submission``/``smtps``/``smtp``; default: the first smtpd service with AUTH and STARTTLS) and
``run_checks`` (port, TLS and certificate, clear-text EHLO, SASL backend, AUTH, relay, sender
login mismatch).  Steps that need a listening port are left out when nothing listens; steps
that need a password are listed as not checked when none was given.
Must not import: cli.
Follows: docs/recipe.md ("Test with openssl") and docs/doctor.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from postillion.config import Configuration, Service, load_config
from postillion.config.mastercf import WELL_KNOWN_PORTS
from postillion.doctor import backend, certificate, dialogue, network
from postillion.doctor.report import Step, failed
from postillion.errors import ConfigError
from postillion.server.runstate import RunPaths, read_running_pid


@dataclass
class Checkup:
    steps: list[Step] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _smtpd_services(cfg: Configuration) -> list[Service]:
    return [s for s in cfg.services if s.type == "inet" and s.command == "smtpd"]


def choose_service(cfg: Configuration, wanted: str | None) -> Service:
    services = _smtpd_services(cfg)
    if not services:
        raise ConfigError("master.cf has no inet smtpd service", path=cfg.master_cf,
                          fix="add the submission entry of docs/recipe.md")
    if wanted is None:
        for s in services:
            p = cfg.params(s)
            if p.get_bool("smtpd_sasl_auth_enable") and not p.get_bool("smtpd_tls_wrappermode"):
                return s
        return services[0]
    for s in services:
        syslog = cfg.params(s).get("syslog_name").rsplit("/", 1)[-1]
        if wanted in (s.name, str(s.listen_port), syslog) or WELL_KNOWN_PORTS.get(wanted) == s.listen_port:
            return s
    names = ", ".join(s.name for s in services)
    raise ConfigError(f"no smtpd service {wanted!r} in master.cf", path=cfg.master_cf,
                      fix=f"use one of {names}")


def _connect_host(service: Service) -> str:
    host = service.listen_host
    if host in (None, "", "0.0.0.0", "*"):
        return "127.0.0.1"
    return "::1" if host == "::" else host


def run_checks(config_dir: Path, *, user: str | None = None, password: str | None = None,
               host: str | None = None, port: int | None = None,
               service_name: str | None = None) -> Checkup:
    out = Checkup()
    try:
        cfg = load_config(config_dir)
        service = choose_service(cfg, service_name)
        params = cfg.params(service)
        wrapper = params.get_bool("smtpd_tls_wrappermode")
    except ConfigError as exc:
        where = f"{exc.path}: " if exc.path else ""
        out.steps.append(failed("configuration", f"{where}{exc.message}",
                                exc.fix or f"postillion -c {config_dir} check"))
        return out
    target = dialogue.Target(host or _connect_host(service), port or service.listen_port, wrapper,
                             service.name, str(config_dir))
    data_dir = params.path("data_directory")
    supervisor = read_running_pid(RunPaths.for_data_directory(data_dir).pid_file) if data_dir else None
    port_step = network.check_port(target.host, target.port, config_dir=config_dir,
                                   supervisor_pid=supervisor)
    out.steps.append(port_step)
    listening = port_step.ok
    if listening:
        tls = dialogue.probe_tls(target, params)
        clear_text = [s for s in tls.steps if s.name == "no AUTH before TLS"]
        out.steps += [s for s in tls.steps if s.name != "no AUTH before TLS"]
        files = certificate.configured_files(params)
        if tls.certificate is not None:
            cert = tls.certificate
            out.steps.append(certificate.check_expiry(cert))
            out.steps.append(certificate.check_hostname(cert, params.get("myhostname")))
            verify_error = None if cert.issuer == cert.subject else dialogue.chain_error(target)
            out.steps.append(certificate.check_chain(cert, verify_error))
        out.steps.append(certificate.check_files(files, tls.certificate, config_dir))
        out.steps += clear_text
    else:
        out.skipped.append("TLS, certificate, AUTH and relay (nothing listens)")
    out.steps += backend.check_backend(params, service.name, user=user, password=password)
    tls_ok = listening and all(s.ok for s in out.steps if s.name == "TLS handshake")
    if user is None or password is None:
        out.skipped.append("passwords, AUTH PLAIN and AUTH LOGIN (give --user U --password-stdin)")
    elif tls_ok:
        out.steps.append(dialogue.check_auth(target, "PLAIN", user, password))
        out.steps.append(dialogue.check_auth(target, "LOGIN", user, password))
    if tls_ok:
        out.steps.append(dialogue.check_relay(target, params))
        if dialogue.login_mismatch_settings(params):
            if user is None or password is None:
                out.skipped.append("sender login mismatch (give --user U --password-stdin)")
            else:
                out.steps.append(dialogue.check_sender_mismatch(target, params, user, password))
    return out
