"""A real HTTP receiver on 127.0.0.1 for webhook tests: verifies signatures, scripted answers."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
                stamp = self.headers["X-Megahub-Timestamp"]
                expected = (
                    "sha256="
                    + hmac.new(
                        receiver.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256
                    ).hexdigest()
                )
                receiver.requests.append({
                    "headers": dict(self.headers), "body": json.loads(body),
                    "signature_valid": hmac.compare_digest(
                        expected, self.headers["X-Megahub-Signature"]),
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
