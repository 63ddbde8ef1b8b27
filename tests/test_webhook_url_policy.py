"""Webhook targets (brand webhooks, alert webhooks) inside the platform's networks are refused at
save and at delivery; a delivery connects to the address it checked, follows no redirect and
keeps only the status and a short excerpt of the answer.

The suite's settings allow 127.0.0.0/8 (the test receivers); the `no_allow_list` fixture
empties WEBHOOK_ALLOWED_NETWORKS, as in production."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from megahub.webhooks import RESPONSE_EXCERPT_BYTES, address_problem, webhook_url_problem
from task_core import events, services, webhooks
from task_core.models import Webhook, WebhookDelivery
from task_monitoring import services as monitoring
from task_monitoring.models import AlertNotification, AlertRule
from task_monitoring.tests.factories import AlertRuleFactory
from tests.factories import TaskFactory
from tests.webhook_receiver import Receiver

HOOK = {"url": "https://hooks.example.com/megahub", "event_types": ["*"]}
RULE = {"name": "Backlog", "metric": "queue_depth", "comparison": "gt", "threshold": 0,
        "window_minutes": 10}  # fmt: skip
INTERNAL_URLS = [
    "http://127.0.0.1:8080/internal",
    "http://127.9.9.9/",
    "http://localhost/",
    "http://localhost./",
    "http://LOCALHOST:9000/x",
    "http://api.localhost/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",  # octal
    "http://127.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/",
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
    "http://10.0.0.5/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://[fc00::1]/",  # ULA
    "http://[fd12:3456::1]/",
    "http://100.64.0.1/",  # CGNAT
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.1.1/",
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://224.0.0.1/",  # multicast
    "http://[ff02::1]/",
    "http://0.0.0.0/",  # unspecified
    "http://0/",
    "http://[::]/",
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://192.0.2.1/",  # documentation
]


@pytest.fixture
def no_allow_list(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = []


@pytest.fixture
def resolver(monkeypatch):
    """Fake DNS: names mapped to a list of answers, one list per lookup (the last repeats)."""
    real = socket.getaddrinfo
    names: dict[str, list[list[str]]] = {}
    calls: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        key = host.rstrip(".") if isinstance(host, str) else host
        if key not in names:
            return real(host, port, *args, **kwargs)
        calls.append(key)
        answers = names[key]
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (a, port or 0))
            for a in addresses
        ]  # fmt: skip

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return type("Resolver", (), {"names": names, "calls": calls})


def _deliver_now():
    WebhookDelivery.objects.unscoped().filter(status="pending").update(
        next_attempt_at=timezone.now()
    )
    return webhooks.webhooks_deliver_due()


def _one_delivery(brand, url):
    """A webhook stored as an older version could have stored it, and one event for it."""
    hook = Webhook.objects.create(brand=brand, url=url, event_types=["created"])
    services.task_create(brand=brand, task_type="noop")
    events.events_relay()
    _deliver_now()
    return hook, WebhookDelivery.objects.unscoped().get(webhook=hook)


class Server:
    """A local HTTP server answering every POST with a fixed status, headers and body."""

    def __init__(self, status=200, headers=(), body=b"ok"):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append(dict(self.headers))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --- at save ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_internal_targets_are_refused_at_save(api, owner, brand, url, no_allow_list):
    client = api(owner, brand)
    response = client.post("/tasks/webhooks/", {**HOOK, "url": url}, format="json")
    assert response.status_code == 400, response.content
    assert "url" in response.json()["field_errors"], response.json()
    assert not Webhook.objects.unscoped().exists()
    assert webhook_url_problem(url) is not None


def test_patching_a_webhook_to_an_internal_target_is_refused(api, owner, brand, no_allow_list):
    hook = Webhook.objects.create(brand=brand, url=HOOK["url"], event_types=["*"])
    response = api(owner, brand).patch(
        f"/tasks/webhooks/{hook.pk}/", {"url": "http://127.0.0.1:6379/"}, format="json"
    )
    assert response.status_code == 400 and "url" in response.json()["field_errors"]
    hook.refresh_from_db()
    assert hook.url == HOOK["url"]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/internal", "http://[::ffff:10.0.0.1]/", "http://100.64.0.1/",
            "http://[fd00:ec2::254]/", "http://localhost./"],
)  # fmt: skip
def test_alert_webhooks_to_internal_targets_are_refused_at_save(
    api, owner, brand, url, no_allow_list
):
    response = api(owner, brand).post(
        "/tasks/monitoring/alert-rules/", {**RULE, "webhook_url": url}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "webhook_url" in response.json()["field_errors"], response.json()
    assert not AlertRule.objects.unscoped().exists()


def test_names_resolving_to_internal_addresses_are_refused_at_save(
    api, owner, brand, resolver, no_allow_list
):
    resolver.names["127.0.0.1.nip.io"] = [["127.0.0.1"]]
    resolver.names["mixed.example.com"] = [["93.184.216.34", "10.1.2.3"]]  # one bad answer
    resolver.names["v6.example.com"] = [["::ffff:169.254.169.254"]]
    for host in ["127.0.0.1.nip.io", "127.0.0.1.nip.io.", "mixed.example.com", "v6.example.com"]:
        response = api(owner, brand).post(
            "/tasks/webhooks/", {**HOOK, "url": f"https://{host}/hook"}, format="json"
        )
        assert response.status_code == 400, (host, response.content)
        assert "resolves to" in response.json()["field_errors"]["url"][0]
    resolver.names["hooks.example.com"] = [["93.184.216.34"]]
    response = api(owner, brand).post("/tasks/webhooks/", HOOK, format="json")
    assert response.status_code == 201, response.content


def test_public_addresses_are_accepted_and_the_allow_list_is_explicit(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    assert address_problem("93.184.216.34") is None
    assert address_problem("2606:2800:220:1:248:1893:25c8:1946") is None
    assert address_problem("127.0.0.1") is not None
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "10.0.0.0/8"]
    assert address_problem("127.0.0.1") is None and address_problem("10.2.3.4") is None
    assert address_problem("192.168.0.1") is not None
    settings.WEBHOOK_ALLOWED_NETWORKS = ["169.254.0.0/16", "100.64.0.0/10"]
    assert address_problem("169.254.169.254") is not None  # metadata: never
    assert address_problem("100.100.100.200") is not None


# --- at delivery --------------------------------------------------------------------------------
def test_a_stored_loopback_webhook_is_refused_at_delivery(brand, no_allow_list):
    """The probe's case: a receiver on 127.0.0.1 is never contacted, its body never stored."""
    server = Server(body=b"internal secret")
    try:
        _, delivery = _one_delivery(brand, server.url)
    finally:
        server.close()
    assert server.requests == []
    assert delivery.status == "failed" and delivery.attempts == 1  # refused: not retried
    assert "refused" in delivery.last_error and delivery.last_response == ""
    assert delivery.last_status_code is None


def test_a_name_resolving_to_loopback_at_delivery_is_refused(brand, resolver, no_allow_list):
    server = Server()
    resolver.names["127.0.0.1.nip.io"] = [["127.0.0.1"]]
    try:
        _, delivery = _one_delivery(brand, f"http://127.0.0.1.nip.io:{server.port}/hook")
    finally:
        server.close()
    assert server.requests == []
    assert delivery.status == "failed" and "resolves to 127.0.0.1" in delivery.last_error


def test_dns_rebinding_cannot_swap_the_checked_address(brand, resolver, settings, no_allow_list):
    """The name answers a public address when checked, then 127.0.0.1 to any later lookup: the
    delivery connects to the address it checked, never to the receiver on loopback."""
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    server = Server()
    resolver.names["rebind.example.com"] = [["93.184.216.34"], ["127.0.0.1"]]
    try:
        _, delivery = _one_delivery(brand, f"http://rebind.example.com:{server.port}/hook")
    finally:
        server.close()
    assert server.requests == []
    assert resolver.calls == ["rebind.example.com"]  # one lookup per attempt
    assert delivery.status == "pending" and delivery.last_status_code is None


def test_delivery_connects_to_the_checked_address_with_the_name_as_host(brand, resolver, settings):
    server = Server()
    resolver.names["hooks.example.com"] = [["127.0.0.1"]]  # allowed by the suite's settings
    try:
        _, delivery = _one_delivery(brand, f"http://hooks.example.com:{server.port}/hook")
    finally:
        server.close()
    assert delivery.status == "delivered", delivery.last_error
    assert server.requests[0]["Host"] == f"hooks.example.com:{server.port}"


def test_redirects_are_not_followed(brand):
    target = Server()
    redirect = Server(status=302, headers=[("Location", target.url)], body=b"")
    try:
        _, delivery = _one_delivery(brand, redirect.url)
    finally:
        redirect.close()
        target.close()
    assert len(redirect.requests) == 1 and target.requests == []
    assert delivery.last_status_code == 302 and delivery.status == "pending"  # not delivered


def test_only_a_short_excerpt_of_the_answer_is_kept_and_shown(api, owner, brand):
    server = Server(status=500, body=b"x" * 10_000)
    try:
        hook, delivery = _one_delivery(brand, server.url)
    finally:
        server.close()
    assert delivery.last_status_code == 500
    assert delivery.last_response == "x" * RESPONSE_EXCERPT_BYTES
    # A row stored before the cap is shown capped too.
    WebhookDelivery.objects.unscoped().filter(pk=delivery.pk).update(last_response="y" * 2000)
    body = api(owner, brand).get(f"/tasks/webhooks/{hook.pk}/deliveries/").json()
    assert body["results"][0]["last_response"] == "y" * RESPONSE_EXCERPT_BYTES


def test_an_alert_webhook_to_loopback_is_refused_at_delivery(brand, no_allow_list):
    receiver = Receiver()
    try:
        rule = AlertRuleFactory(brand=brand, threshold=0, webhook_url=receiver.url)
        TaskFactory(brand=brand, status="queued")
        monitoring.alert_rule_evaluate(rule=AlertRule.objects.unscoped().get(pk=rule.pk))
        monitoring.alert_notifications_deliver()
    finally:
        receiver.close()
    assert receiver.requests == []
    notification = AlertNotification.objects.unscoped().get()
    assert notification.status == "failed" and notification.attempts == 1
    assert "refused" in notification.last_error
