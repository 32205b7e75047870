"""consent-gateway: server-side cookie and tracking consent for ASGI sites."""

from .analytics import create_analytics_app
from .consent import Consent, ConsentStatus, Method
from .errors import ConsentGatewayError, RequestError, SettingsError, StoreError
from .gateway import ConsentGateway
from .middleware import ConsentMiddleware
from .settings import BannerTexts, Category, PolicyVersion, Settings

__all__ = [
    "BannerTexts",
    "Category",
    "Consent",
    "ConsentGateway",
    "ConsentGatewayError",
    "ConsentMiddleware",
    "ConsentStatus",
    "Method",
    "PolicyVersion",
    "RequestError",
    "Settings",
    "SettingsError",
    "StoreError",
    "create_analytics_app",
]

__version__ = "0.1.0"
