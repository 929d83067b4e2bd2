"""Apps, credentials, access tokens, IAM signatures, published services, quotas and usage.

Knows nothing of models or HTTP frameworks: the API turns PlatformError into Qianfan error bodies and OAuthError
into token endpoint errors.
"""
from .errors import AdminError, OAuthError, PlatformError
from .facade import Platform
from .records import Admission, App, Counters, Limits, NewKeys, Service, UsageRow

__all__ = ["Platform", "PlatformError", "OAuthError", "AdminError", "App", "Service", "Limits", "Admission",
           "NewKeys", "Counters", "UsageRow"]
