"""Outgoing webhooks, shared by every app that notifies a URL: URL policy, HMAC-SHA256
signature, one signed POST.

Signature: ``X-Megahub-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` keyed by
the subscription's secret, with ``X-Megahub-Timestamp: <unix seconds>``. A receiver recomputes
it over the raw body and rejects old timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

_FORBIDDEN_NETS = [ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")]
_FORBIDDEN_HOSTS = {"metadata.google.internal", "metadata"}


class WebhookRefused(Exception):
    """The URL is not acceptable (scheme, link-local address): retrying cannot help."""


def _forbidden_ip(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in net for net in _FORBIDDEN_NETS if address.version == net.version)


def webhook_url_problem(url: str) -> str | None:
    """Why a webhook URL is refused (None if acceptable): http(s) only, no credentials, no
    link-local or cloud metadata address."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "Enter a valid URL."
    if parts.scheme not in ("http", "https"):
        return "Only http and https webhook URLs are accepted."
    host = (parts.hostname or "").lower()
    if not host:
        return "The URL has no host."
    if parts.username or parts.password:
        return "Credentials in the URL are not accepted; the payload is signed instead."
    if host in _FORBIDDEN_HOSTS or _forbidden_ip(host):
        return "Link-local and cloud metadata addresses are not accepted."
    return None


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is answered as the 3xx it is: not delivered


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass
class WebhookResponse:
    status: int
    body: str


def webhook_post(
    url: str, *, secret: str, payload: dict, headers: dict, timeout: float
) -> WebhookResponse:
    """One signed POST. Raises WebhookRefused for a forbidden URL (also re-checked after DNS
    resolution), OSError/URLError for network failures; any HTTP status is returned."""
    problem = webhook_url_problem(url)
    if problem is None:
        for info in socket.getaddrinfo(urlsplit(url).hostname or "", None):
            if _forbidden_ip(info[4][0]):
                problem = "resolves to a link-local address"
    if problem:
        raise WebhookRefused(f"refused webhook URL: {problem}")
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "megahub-webhooks/1",
            "X-Megahub-Timestamp": timestamp,
            "X-Megahub-Signature": webhook_signature(secret, timestamp, body),
            **headers,
        },
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            return WebhookResponse(response.status, response.read(2048).decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        return WebhookResponse(exc.code, exc.read(2048).decode(errors="replace"))
