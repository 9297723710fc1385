"""Masking credentials in any text the app shows or stores (messages, tags, params, log lines)."""
from __future__ import annotations

import re


def mask_credentials(text: object) -> str:
    """Hide user:password@ in URIs and token-like query values in any message."""
    text = re.sub(r"(?<=://)[^/@\s]+@", "***@", str(text))
    return re.sub(r"(?i)((?:token|password|secret|key)=)[^&\s]+", r"\1***", text)


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, credentials masked."""
    return mask_credentials(f"{type(exc).__name__}: {exc}")
