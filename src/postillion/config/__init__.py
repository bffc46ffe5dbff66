"""postillion configuration: main.cf, master.cf, the parameter registry, and checks.

Owns: the public configuration API of docs/design.md ("Config").
Must not import: server, queue, policy, delivery, cli.
Follows: postconf(5), master(5) and postconf(1) of Postfix 3.7.
"""

from __future__ import annotations

from postillion.config.check import Diagnostic, check_config
from postillion.config.configuration import Configuration, load_config
from postillion.config.mastercf import Service
from postillion.config.params import Params

__all__ = ["Configuration", "Diagnostic", "Params", "Service", "check_config", "load_config"]
