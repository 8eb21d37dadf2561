"""Expiring HMAC signatures for URLs a browser fetches without our headers.

An `<img src>` preview, a direct upload or a calendar download carries no `X-User-Id` or
bearer token, so the URL itself must prove what it grants: the signature binds its parts
(say, a purpose, a resource id and its owner) and an expiry time, under a key every
process of a deployment shares (`CHATKIT_SECRET_KEY`, or one kept in the database).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

MIN_KEY_BYTES = 16


class Signer:
    """Signs and checks `(parts, expiry)`; a changed part or a passed expiry fails."""

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a signing key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self._clock = clock

    def sign(self, *parts: str, ttl: float) -> tuple[int, str]:
        """The expiry (Unix seconds) and signature for `parts`, valid for `ttl` seconds."""
        expires = int(self._clock() + ttl)
        return expires, self._mac(parts, expires)

    def verify(self, *parts: str, expires: int | str, signature: str) -> bool:
        """True when `signature` was made for exactly `parts` and `expires` has not passed."""
        try:
            expiry = int(expires)
        except ValueError:
            return False
        if expiry < self._clock():
            return False
        return hmac.compare_digest(self._mac(parts, expiry), signature)

    def _mac(self, parts: tuple[str, ...], expires: int) -> str:
        # A separator no part can hold, so ("ab", "c") and ("a", "bc") differ.
        message = "\x00".join((*parts, str(expires))).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
