"""The file of a `webhook` connector: `[connector]`, `[consume]` and `[webhook]`.

::

    [webhook]
    url = "https://hooks.example.com/orders"   # http or https
    headers = { Authorization = "Bearer …" }   # static headers sent with every POST
    timeout = 10                               # seconds for one POST, answer included
    concurrency = 8                            # POSTs in flight at once within a batch
    secret_file = "/etc/plexus/hook.secret"    # or secret = "…": signs every body
    ca = "/etc/plexus/hook-ca.crt"             # a private CA for an https url
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Self

from pydantic import (
    Field,
    HttpUrl,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from plexus.connectors.base import ConnectorSection, ConsumeSection, Section
from plexus.connectors.webhook_request import IDEMPOTENCY_HEADER

__all__ = ["WebhookSection", "WebhookSettings"]

# RFC 9110's token characters: what a header name may be made of.
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the sink sets itself; a configured one would contradict them.
OWN_HEADERS = frozenset(
    h.lower()
    for h in ("Content-Type", "Content-Length", "Host", "Transfer-Encoding", IDEMPOTENCY_HEADER)
)
OWN_PREFIX = "x-plexus-"


class WebhookSection(Section):
    """`[webhook]`: where and how events are posted.

    Each check hangs on one key, so that an error names it (and never shows
    the secret: the loader prints the offending value).
    """

    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=10.0, gt=0, le=600, strict=True)
    concurrency: int = Field(default=8, ge=1, le=256, strict=True)
    secret: SecretStr | None = None
    secret_file: Path | None = None
    ca: Path | None = None
    _key: bytes | None = PrivateAttr(default=None)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in OWN_HEADERS or name.lower().startswith(OWN_PREFIX):
                raise ValueError(f"{name} is set by the webhook sink itself")
            if "\r" in value or "\n" in value:
                raise ValueError(f"the value of {name} holds a line break")
        return headers

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and not secret.get_secret_value():
            raise ValueError("empty: give a secret, or leave the key out to send unsigned")
        return secret

    @field_validator("secret_file")
    @classmethod
    def _check_secret_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        if info.data.get("secret") is not None:
            raise ValueError("give secret or secret_file, not both")
        if not _read_secret(path):
            raise ValueError("the file is empty")
        return path

    @field_validator("ca")
    @classmethod
    def _check_ca(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        url = info.data.get("url")
        if url is not None and url.scheme != "https":
            raise ValueError(f"a CA is for an https url, and url is {url}")
        try:
            ssl.create_default_context(cafile=str(path))
        except FileNotFoundError:
            raise ValueError("no such file") from None
        except OSError as exc:  # ssl.SSLError included
            raise ValueError(f"not a PEM CA certificate ({exc})") from None
        return path

    @model_validator(mode="after")
    def _load_key(self) -> Self:
        if self.secret is not None:
            self._key = self.secret.get_secret_value().encode("utf-8")
        elif self.secret_file is not None:
            self._key = _read_secret(self.secret_file)
        return self

    def signing_key(self) -> bytes | None:
        """The HMAC key from `secret` or `secret_file`; None: bodies go unsigned."""
        return self._key


class WebhookSettings(Section):
    """A whole `webhook` connector file."""

    connector: ConnectorSection
    consume: ConsumeSection
    webhook: WebhookSection


def _read_secret(path: Path) -> bytes:
    # Read once at load time: a secret file is a few bytes. A trailing newline
    # (as `echo` writes) is not part of the secret.
    try:
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror}") from None
