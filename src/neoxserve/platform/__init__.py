"""Apps, credentials, access tokens, API keys, IAM signatures, published services, quotas and usage.

Knows nothing of models or HTTP frameworks: the API turns PlatformError into Qianfan error bodies, OAuthError
into token endpoint errors and BceError into IAM endpoint errors.
"""
from .errors import AdminError, BceError, OAuthError, PlatformError, QuotaError
from .facade import Platform
from .records import (Admission, ApiKey, App, Counters, Limits, NewApiKey, NewKeys, Outcome, Service, UsageRow)

__all__ = ["Platform", "PlatformError", "QuotaError", "OAuthError", "BceError", "AdminError", "App", "Service",
           "Limits", "Admission", "Outcome", "NewKeys", "NewApiKey", "ApiKey", "Counters", "UsageRow"]
