"""consent-gateway: server-side cookie and tracking consent for ASGI sites."""

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
]

__version__ = "0.1.0"
