"""Signed URLs: what a browser holds grants exactly its parts, until it expires."""

from __future__ import annotations

import pytest

from tripchat.signing import Signer

KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_signature_holds_for_its_parts_until_it_expires() -> None:
    clock = Clock()
    signer = Signer(KEY, clock)
    expires, signature = signer.sign("preview", "atc_1", "alice", ttl=60)
    assert signer.verify("preview", "atc_1", "alice", expires=expires, signature=signature)
    assert signer.verify("preview", "atc_1", "alice", expires=str(expires), signature=signature)
    clock.now += 61
    assert not signer.verify("preview", "atc_1", "alice", expires=expires, signature=signature)


@pytest.mark.parametrize(
    "parts",
    [
        ("preview", "atc_2", "alice"),  # another attachment
        ("preview", "atc_1", "bob"),  # another user
        ("upload", "atc_1", "alice"),  # another purpose
        ("preview", "atc_1alice", ""),  # the same characters split differently
    ],
)
def test_a_signature_grants_nothing_else(parts: tuple[str, ...]) -> None:
    signer = Signer(KEY)
    expires, signature = signer.sign("preview", "atc_1", "alice", ttl=60)
    assert not signer.verify(*parts, expires=expires, signature=signature)


def test_tampering_fails() -> None:
    signer = Signer(KEY)
    expires, signature = signer.sign("preview", "atc_1", ttl=60)
    assert not signer.verify("preview", "atc_1", expires=expires + 3600, signature=signature)
    assert not signer.verify("preview", "atc_1", expires="soon", signature=signature)
    flipped = signature[:-1] + ("1" if signature[-1] == "0" else "0")
    assert not signer.verify("preview", "atc_1", expires=expires, signature=flipped)
    other = Signer(b"o" * 32)
    assert not other.verify("preview", "atc_1", expires=expires, signature=signature)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Signer(b"short")
