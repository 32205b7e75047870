"""Marketing analytics over permitted data: token-authenticated API, dashboard and queries."""

from .app import AnalyticsMount, create_analytics_app
from .params import DIMENSIONS, Query
from .queries import Analytics, Result, run_query
from .tokens import TokenRecord, TokenStore, share_link

__all__ = [
    "DIMENSIONS",
    "Analytics",
    "AnalyticsMount",
    "Query",
    "Result",
    "TokenRecord",
    "TokenStore",
    "create_analytics_app",
    "run_query",
    "share_link",
]
