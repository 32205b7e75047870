"""ClickHouse access: one URL picks the embedded engine or a server."""

from .client import DATA_ERRORS, Store, error_code, is_data_error, open_store
from .schema import EVENT_COLUMNS, RECEIPT_COLUMNS, migrate

__all__ = [
    "DATA_ERRORS",
    "EVENT_COLUMNS",
    "RECEIPT_COLUMNS",
    "Store",
    "error_code",
    "is_data_error",
    "migrate",
    "open_store",
]
