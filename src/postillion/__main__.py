"""python -m postillion → the postillion command."""

from postillion.cli.main import main

raise SystemExit(main())
