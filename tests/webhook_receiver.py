"""A real HTTP receiver on 127.0.0.1 for webhook tests: verifies Standard Webhooks signatures
(with the standardwebhooks library), scripted answers."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


def signature_valid(secret: str, body: bytes, headers: dict) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


class Receiver:
    def __init__(self, secret: str = "", answers=(200,), delay_s: float = 0.0):
        self.secret = secret
        self.answers = list(answers)  # status per request; the last one repeats
        self.delay_s = delay_s
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = dict(self.headers)
                receiver.requests.append({
                    "headers": headers, "body": json.loads(body), "raw_body": body,
                    "signature_valid": bool(receiver.secret)
                    and signature_valid(receiver.secret, body, headers),
                })  # fmt: skip
                time.sleep(receiver.delay_s)
                n = len(receiver.requests) - 1
                status = receiver.answers[min(n, len(receiver.answers) - 1)]
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"boom")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
