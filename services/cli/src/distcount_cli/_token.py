"""`distcount token new`: a fresh bearer token, and the hash the ingress is configured with.

The token goes to the client (DISTCOUNT_TOKEN for the commands, `token=` for distcount_client);
only its hash goes to the ingress's DISTCOUNT_WRITE_TOKEN_HASHES or DISTCOUNT_READ_TOKEN_HASHES.
"""

from __future__ import annotations

import secrets
import sys
from typing import Final

from distcount_config import token_hash

# 32 random bytes: 43 characters of URL-safe base64, beyond any guessing
TOKEN_BYTES: Final = 32


def new() -> int:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    print(f"token: {token}")
    print(f"hash:  {token_hash(token)}")
    print(
        "Give the token to the client (DISTCOUNT_TOKEN, or token= of distcount_client) and add "
        "the hash to DISTCOUNT_WRITE_TOKEN_HASHES and/or DISTCOUNT_READ_TOKEN_HASHES of the "
        "ingress; the token is shown this once and is not kept anywhere.",
        file=sys.stderr,
    )
    return 0
