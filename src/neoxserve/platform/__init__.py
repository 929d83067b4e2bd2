"""Apps, credentials, access tokens, API keys, IAM signatures, published services, quotas and usage.

Knows nothing of models or HTTP frameworks: the API turns PlatformError into Qianfan error bodies, OAuthError
into token endpoint errors and BceError into IAM endpoint errors.
"""
from .admin_access import Session
from .errors import AdminAuthError, AdminError, BceError, Conflict, NotFound, OAuthError, PlatformError, QuotaError
from .facade import Platform
from .records import (AccessCode, Admission, ApiKey, App, Counters, Limits, NewAccessCode, NewApiKey, NewKeys,
                      Outcome, Service, UsageRow)

__all__ = ["Platform", "PlatformError", "QuotaError", "OAuthError", "BceError", "AdminError", "NotFound", "Conflict",
           "AdminAuthError", "App", "Service", "Limits", "Admission", "Outcome", "NewKeys", "NewApiKey", "ApiKey",
           "Counters", "UsageRow", "Session", "AccessCode", "NewAccessCode"]
