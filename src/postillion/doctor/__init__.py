"""``postillion doctor``: the recipe's "Test" section, run against a live service.

Owns: the public surface of the doctor: ``run_checks`` (→ ``Checkup`` with ``steps`` and
``skipped``), ``Step`` and the two renderers.  One module per area: ``network`` (who listens),
``certificate`` (expiry, name, chain, key), ``backend`` (saslauthd / user store, directly),
``dialogue`` (SMTP as a client sees it), ``report`` (the checklist), ``checkup`` (the order).
Layer: above config, sasl and server (it reads their files and uses their clients), below cli.
Must not import: cli.
Follows: docs/recipe.md and docs/doctor.md.
"""

from __future__ import annotations

from postillion.doctor.checkup import Checkup, run_checks
from postillion.doctor.report import Step, all_ok, render_json, render_text

__all__ = ["Checkup", "Step", "all_ok", "render_json", "render_text", "run_checks"]
