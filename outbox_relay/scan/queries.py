"""The scan's named SQL statements (``outbox_relay/db/scan.sql``), parsed once at import.

They are in :data:`outbox_relay.db.queries.QUERIES`, with every other named statement of the
package (one loader); ``Q`` is kept as the scan's short name for it.
"""

from __future__ import annotations

from typing import Final

from outbox_relay.db.queries import QUERIES

Q: Final = QUERIES
