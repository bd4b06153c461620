"""Redaction: the password of a URL (`https://user:password@host/`) never leaves esm.

A function URL may carry credentials, and URLs reach many outputs: `esm validate`, /status,
logs, error texts. Every one of them passes its text through `redact`, so a password is
hidden the same way wherever it would have been shown.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

MASK = "***"

# scheme://userinfo@ — userinfo stops at what cannot be in it unencoded (whitespace, a path,
# query or fragment, quotes and brackets), so that in JSON or a repr the match never runs
# past the URL's end. It may hold an unencoded "@": the last "@" ends it, as in urlsplit.
_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#\"<>\\\[\]{}|^`]*)@"
)


def _mask(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    if colon:
        return f"{match['scheme']}{user}:{MASK}@"
    # A user name alone is often a token (https://TOKEN@host/): hide it too.
    return f"{match['scheme']}{MASK}@"


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***` (`user:***@host`); a URL
    with a user name and no password has the name replaced, as it is often a token."""
    if "@" not in text or "://" not in text:
        return text
    return _USERINFO.sub(_mask, text)
