#!/usr/bin/env python3
"""Three tiny HTTP functions for the product import example: transform, store and stock.

Run: python3 examples/product-import/functions.py 8091
Each function is POST /<name> with a JSON body and answers JSON, Lambda style: errors are a
non-2xx status with {"errorType": ..., "errorMessage": ...}.
"""
import json
import sys
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer

STORE = {}
STOCK = {}


def transform(p):
    cents = int(Decimal(str(p["price"])) * 100)
    return {"sku": p["sku"], "name": p["name"].strip().title(), "priceCents": cents, "quantity": p["quantity"]}


def store(item):
    STORE[item["sku"]] = item
    return {"stored": True}


def stock(req):
    STOCK[req["sku"]] = STOCK.get(req["sku"], 0) + req["quantity"]
    return {"sku": req["sku"], "stock": STOCK[req["sku"]]}


FUNCTIONS = {"/transform": transform, "/store": store, "/stock": stock}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        fn = FUNCTIONS.get(self.path)
        try:
            if fn is None:
                raise KeyError(self.path)
            status, reply = 200, fn(body)
        except Exception as e:  # Lambda-style error reply
            status, reply = 500, {"errorType": type(e).__name__, "errorMessage": str(e)}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8091
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
