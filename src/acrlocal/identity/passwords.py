"""Users' passwords: Entra's complexity rule, and salted slow hashes (pure; no storage).

A password is kept as ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (base64 salt and hash): scrypt with a 16-byte random
salt, n=2**14, r=8, p=1 (16 MiB and about 50 ms of one core per check on this machine). Checking costs that much
on purpose, so callers run :func:`verify_password` off the event loop and bound how many run at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string

from acrlocal.errors import AcrLocalError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SALT_BYTES = 16
_KEY_BYTES = 32
MIN_LENGTH, MAX_LENGTH = 8, 256


class WeakPassword(AcrLocalError, ValueError):
    """A password that does not meet Entra's complexity rule (8 to 256 characters, 3 of 4 character classes)."""


def check_complexity(password: str) -> None:
    """Raise :class:`WeakPassword` unless ``password`` has 8 to 256 characters from at least three of: lower-case
    letters, upper-case letters, digits, symbols (Entra's rule for cloud users)."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise WeakPassword(f"a password has {MIN_LENGTH} to {MAX_LENGTH} characters, not {len(password)}")
    classes = [any(c.islower() for c in password), any(c.isupper() for c in password),
               any(c.isdigit() for c in password), any(not c.isalnum() for c in password)]
    if sum(classes) < 3:
        raise WeakPassword("a password needs characters of at least three kinds: lower-case letters, upper-case "
                           "letters, digits and symbols")


def generate_password() -> str:
    """A random password that meets the complexity rule (for the user ``acrlocal up`` creates). It starts with a
    letter, so ``az login -u <user> -p <password>`` takes it as the option's value, not as another option."""
    return secrets.choice(string.ascii_letters) + secrets.token_urlsafe(18) + \
        secrets.choice(string.ascii_uppercase) + secrets.choice(string.ascii_lowercase) + \
        secrets.choice(string.digits) + "!"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=_KEY_BYTES)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()])


#: Checked against when there is no user, so that an unknown name costs what a known one does.
_DUMMY = hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, stored: str | None) -> bool:
    """True if ``password`` hashes to ``stored``; ``stored`` ``None`` (no such user) costs the same and is False.
    A stored value in an unknown format never matches."""
    text = stored if stored is not None else _DUMMY
    try:
        scheme, n, r, p, salt, digest = text.split("$")
        if scheme != "scrypt":
            return False
        computed = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
        ok = hmac.compare_digest(computed, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False
    return ok and stored is not None
