"""``python -m kwlab`` = the ``kwlab`` command (see :mod:`kwlab.cli`)."""

from kwlab.cli import main

raise SystemExit(main())
