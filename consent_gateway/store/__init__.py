"""ClickHouse access: one URL picks the embedded engine or a server."""

from .client import Store, open_store
from .schema import EVENT_COLUMNS, RECEIPT_COLUMNS, migrate

__all__ = ["EVENT_COLUMNS", "RECEIPT_COLUMNS", "Store", "migrate", "open_store"]
