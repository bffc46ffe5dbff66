"""Loading a configuration directory: main.cf + master.cf -> ``Configuration``.

Owns: ``load_config`` and ``Configuration`` (paths, services, per-service ``Params``).
Must not import: server, queue, policy, cli.
Follows: Postfix's rule that a master.cf ``-o name=value`` overrides main.cf for that service
only, and that ``$service_name`` is the master.cf service name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from postillion.config.maincf import MainCf, read_main_cf
from postillion.config.mastercf import MasterCf, Service, read_master_cf
from postillion.config.params import Origin, Params


@dataclass(slots=True)
class Configuration:
    config_dir: Path
    main: MainCf
    master: MasterCf
    _base: Params | None = field(default=None, repr=False)

    @property
    def main_cf(self) -> Path:
        return self.config_dir / "main.cf"

    @property
    def master_cf(self) -> Path:
        return self.config_dir / "master.cf"

    @property
    def services(self) -> list[Service]:
        """Effective master.cf entries in file order (a repeated name/type: the last wins)."""
        return self.master.services

    def params(self, service: Service | None = None) -> Params:
        """main.cf over defaults, plus ``service``'s ``-o`` overrides when given."""
        if self._base is None:
            origins = {d.name: Origin(self.main_cf, d.lineno) for d in self.main.definitions}
            self._base = Params(self.main.values, config_dir=self.config_dir, origins=origins)
        if service is None:
            return self._base
        origins = {name: Origin(self.master_cf, service.override_linenos.get(name, service.lineno))
                   for name in service.overrides}
        return self._base.with_overrides(service.overrides, service_name=service.name,
                                         origins=origins)


def load_config(config_dir: Path | str) -> Configuration:
    """Read ``config_dir``/main.cf and master.cf (missing files are empty).

    Raises ConfigError (path, lineno, name, fix) on syntax errors.
    """
    config_dir = Path(config_dir)
    return Configuration(config_dir, read_main_cf(config_dir / "main.cf"),
                         read_master_cf(config_dir / "master.cf"))
