"""The ``appt`` command line (``appt.cli.main:main``); see docs/cli.md."""
