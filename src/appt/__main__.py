"""``python -m appt ...``: the same as the ``appt`` command."""

from appt.cli.main import main

raise SystemExit(main())
