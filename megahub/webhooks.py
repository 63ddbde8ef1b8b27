"""Outgoing webhooks, shared by every app that notifies a URL: URL policy, signing secrets,
one signed POST.

Signature: the Standard Webhooks scheme (https://www.standardwebhooks.com/), made by the
``standardwebhooks`` library: ``webhook-id`` (the message id, the same on every retry),
``webhook-timestamp`` (unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">`` keyed by the subscription's secret, ``whsec_<base64 key>``. A
receiver verifies it with ``standardwebhooks.Webhook(secret).verify(body, headers)``, which
also rejects timestamps more than 5 minutes away (replays).

URL policy (docs/messaging.md, *Webhook URL policy*): http(s) only, no credentials, and no
target inside the platform's own networks. An address is refused when it is not globally
routable: loopback, private (RFC 1918, ULA), link-local, CGNAT (100.64/10), multicast,
unspecified, reserved, documentation and benchmarking ranges, and the IPv4 address inside an
IPv4-mapped, NAT64 or 6to4 IPv6 address is checked as IPv4. Cloud metadata addresses are refused
even when WEBHOOK_ALLOWED_NETWORKS would allow their range. Checked twice:

- at save (``webhook_url_problem``): IP literals in every spelling the resolver accepts
  (``2130706433``, ``0x7f.1``, ``0177.0.0.1``), ``localhost`` names (with or without the trailing
  dot), and the addresses the name resolves to right now;
- at delivery (``webhook_post``): the name is resolved again, every address is checked, and the
  connection goes to a checked address (so a DNS answer that changes in between cannot swap
  it); no redirect is followed. Only the status and a short excerpt of the body are kept.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import ipaddress
import json
import re
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from standardwebhooks import Webhook as StandardWebhook

# Response bytes kept per attempt: enough to read an error message, never a read channel.
RESPONSE_EXCERPT_BYTES = 256
# Cloud metadata endpoints (AWS, GCP, Azure, OpenStack; ECS task metadata; Alibaba): refused
# even inside an allowed network.
_METADATA_ADDRESSES = {
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
}
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# How long a save waits for DNS; an unresolved name is accepted (delivery checks it again).
_SAVE_RESOLVE_TIMEOUT_S = 2.0
_resolver_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="dns")


class WebhookRefused(Exception):
    """The URL is not acceptable (scheme, an internal address): retrying cannot help."""


@lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _allowed_networks() -> tuple:
    return _networks(tuple(getattr(settings, "WEBHOOK_ALLOWED_NETWORKS", ())))


def _embedded_ipv4(address):
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4), else None."""
    if address.version != 6:
        return None
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_problem(ip: str) -> str | None:
    """Why a webhook may not connect to this IP address (None if it may)."""
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return f"{ip!r} is not an IP address."
    candidates = [address]
    if (inner := _embedded_ipv4(address)) is not None:
        candidates.append(inner)
    if any(a in _METADATA_ADDRESSES for a in candidates):
        return "Cloud metadata addresses are not accepted."
    allowed = _allowed_networks()
    for a in candidates:
        if any(a.version == n.version and a in n for n in allowed):
            continue
        if not a.is_global or a.is_multicast or a.is_reserved or a.is_unspecified:
            return (
                "Loopback, private, link-local, shared (CGNAT), multicast and reserved addresses "
                "are not accepted."
            )
    return None


def _literal_ip(host: str) -> str | None:
    """The address an IP literal stands for, in any spelling the system resolver accepts
    (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``), else None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except (OSError, UnicodeError, ValueError):
        return None


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # as in the URL (Host header, TLS server name)
    port: int
    path: str  # path and query


def _parse(url: str) -> tuple[_Target | None, str | None]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, TypeError):
        return None, "Enter a valid URL."
    if parts.scheme not in ("http", "https"):
        return None, "Only http and https webhook URLs are accepted."
    host = (parts.hostname or "").lower()
    if not host:
        return None, "The URL has no host."
    if parts.username or parts.password:
        return None, "Credentials in the URL are not accepted; the payload is signed instead."
    default_port = 443 if parts.scheme == "https" else 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(parts.scheme, host, port or default_port, path), None


def _static_problem(host: str) -> tuple[str | None, list[str] | None]:
    """(problem, addresses) from the host name alone: addresses is set when the name
    is an IP literal or a localhost name, None when it needs DNS."""
    name = host.rstrip(".")
    if name in _METADATA_HOSTS:
        return "Cloud metadata addresses are not accepted.", None
    if name == "localhost" or name.endswith(".localhost"):
        addresses = ["127.0.0.1", "::1"]
    elif (literal := _literal_ip(name)) is not None:
        addresses = [literal]
    else:
        return None, None
    for address in addresses:
        if problem := address_problem(address):
            return problem, addresses
    return None, addresses


def webhook_url_problem(url: str) -> str | None:
    """Why a webhook URL is refused at save (None if acceptable). A name is resolved (briefly):
    one resolving to a refused address is refused; one that does not resolve now is accepted,
    since every delivery resolves and checks it again."""
    target, problem = _parse(url)
    if problem:
        return problem
    problem, addresses = _static_problem(target.host)
    if problem or addresses is not None:
        return problem
    future = _resolver_pool.submit(_resolve, target.host, target.port)
    try:
        resolved = future.result(timeout=_SAVE_RESOLVE_TIMEOUT_S)
    except (OSError, UnicodeError, concurrent.futures.TimeoutError):
        return None
    for address in resolved:
        if problem := address_problem(address):
            return f"{target.host} resolves to {address}: {problem}"
    return None


# Signing secrets: "whsec_" + the base64 of the key, as Standard Webhooks libraries expect.
SECRET_PREFIX = "whsec_"


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def standard_secret(secret: str) -> str:
    """A secret of the older format (plain text, its UTF-8 bytes the key) in the Standard
    Webhooks format, with the same key (the data migrations of stored secrets)."""
    if secret.startswith(SECRET_PREFIX):
        return secret
    return SECRET_PREFIX + base64.b64encode(secret.encode()).decode()


def convert_stored_secrets(model, field: str) -> None:
    """Rewrite the older-format secrets of ``model.<field>`` in the Standard Webhooks format
    (a data migration, given its historical model)."""
    rows = model._base_manager.exclude(**{f"{field}__startswith": SECRET_PREFIX})
    for row in rows.only("pk", field):
        setattr(row, field, standard_secret(getattr(row, field)))
        row.save(update_fields=[field])


# A signing secret an API client may set (OpenAPI pattern and the check alike): the prefix, then
# standard base64 (padded) of 16 to 128 bytes: 3g bytes (g = 6..42) or 3g + 1 / 3g + 2 (g = 5..42).
_B64 = "[A-Za-z0-9+/]"
SIGNING_SECRET_PATTERN = (
    rf"^{SECRET_PREFIX}(?:(?:{_B64}{{4}}){{6,42}}"
    rf"|(?:{_B64}{{4}}){{5,42}}(?:{_B64}{{2}}==|{_B64}{{3}}=))$"
)
SIGNING_SECRET_RULE = f"A signing secret is '{SECRET_PREFIX}' + the base64 of 16 to 128 bytes."


def validate_signing_secret(secret: str) -> None:
    """The model field validator of stored signing secrets (forms, the admin)."""
    if not re.fullmatch(SIGNING_SECRET_PATTERN, secret):
        raise ValidationError(SIGNING_SECRET_RULE)


def webhook_signature_headers(secret: str, message_id: str, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one message, signed now."""
    sent_at = datetime.fromtimestamp(int(time.time()), UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": StandardWebhook(secret).sign(message_id, sent_at, body.decode()),
    }


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to ``host`` (Host header) over a connection to one already checked address."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``host`` (Host header, TLS server name and certificate) over a connection to
    one already checked address."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass
class WebhookResponse:
    status: int
    body: str  # at most RESPONSE_EXCERPT_BYTES of the response body


def webhook_target_addresses(url: str) -> list[str]:
    """The checked addresses a delivery may connect to. Raises WebhookRefused for a forbidden
    URL or a name resolving (now) to any forbidden address; OSError when it does not resolve."""
    target, problem = _parse(url)
    if problem is None:
        problem, addresses = _static_problem(target.host)
    if problem:
        raise WebhookRefused(f"refused webhook URL: {problem}")
    if addresses is None:
        addresses = _resolve(target.host, target.port)
    for address in addresses:
        if problem := address_problem(address):
            raise WebhookRefused(
                f"refused webhook URL: {target.host} resolves to {address}: {problem}"
            )
    return addresses


def webhook_post(
    url: str, *, secret: str, message_id: str, payload: dict, headers: dict, timeout: float
) -> WebhookResponse:
    """One signed POST (``message_id``: the same on every retry of one message). Raises
    WebhookRefused for a forbidden URL (checked again against the addresses the name resolves
    to now, and connected to one of those), OSError for network failures and an invalid HTTP
    answer; any HTTP status is returned, redirects included (not followed)."""
    addresses = webhook_target_addresses(url)
    target, _ = _parse(url)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    request_headers = {
        "Content-Type": "application/json",
        "User-Agent": "megahub-webhooks/1",
        **webhook_signature_headers(secret, message_id, body),
        **headers,
    }
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    error: OSError | None = None
    for address in addresses:
        connection = connection_class(target.host, target.port, address=address, timeout=timeout)
        try:
            connection.request("POST", target.path, body=body, headers=request_headers)
            response = connection.getresponse()
            excerpt = response.read(RESPONSE_EXCERPT_BYTES)
            return WebhookResponse(response.status, excerpt.decode(errors="replace"))
        except ConnectionRefusedError as exc:  # the next address may answer
            error = exc
        except http.client.HTTPException as exc:  # its message may quote the answer: not kept
            raise OSError(f"invalid HTTP answer ({type(exc).__name__})") from None
        finally:
            connection.close()
    raise error or OSError("no address to connect to")
