"""``python -m outbox_relay`` is the ``outbox-relay`` command."""

import sys

from outbox_relay.cli.main import main

sys.exit(main())
