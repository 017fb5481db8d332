#!/usr/bin/env python3
"""The two services the order-processing example calls, on one port (default 8092):

  POST /reserve       the stock service (`http:invoke` from ReserveStock): {"reserved": true}
  POST /notify        the `notify-customer` function: keeps the order's task token, as a
                      customer's inbox would
  GET  /token/<order> the token sent for an order, once it arrived (waits up to 10 s; 404
                      after that)

Run: python3 examples/order-processing/services.py [PORT]
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKENS = {}
ARRIVED = threading.Condition()


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/reserve":
            self.reply(200, {"reserved": True, "items": len(body.get("items", []))})
        elif self.path == "/notify":
            with ARRIVED:
                TOKENS[body["orderId"]] = body["token"]
                ARRIVED.notify_all()
            print(f"order {body['orderId']}: the customer was asked to confirm", flush=True)
            self.reply(200, {"notified": True})
        else:
            self.reply(404, {"errorType": "NotFound", "errorMessage": self.path})

    def do_GET(self):
        if not self.path.startswith("/token/"):
            return self.reply(404, {"errorType": "NotFound", "errorMessage": self.path})
        order = self.path[len("/token/"):]
        with ARRIVED:
            ARRIVED.wait_for(lambda: order in TOKENS, timeout=10)
            token = TOKENS.get(order)
        if token is None:
            return self.reply(404, {"errorType": "NotFound", "errorMessage": f"no token for {order}"})
        self.reply(200, token)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8092
    print(f"order services on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
