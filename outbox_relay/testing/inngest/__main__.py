"""``python -m outbox_relay.testing.inngest``: the Event API stand-in as a process."""

import sys

from outbox_relay.testing.inngest.server import main

sys.exit(main())
