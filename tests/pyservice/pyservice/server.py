"""The service's HTTP side: each path calls one piece of work; the reply is the handler's last statement, so
no line of ours runs after the client has its answer."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pyservice import work


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if url.path == "/square":
            self.reply(200, {"area": work.area("square", float(query["side"]))})
        elif url.path == "/circle":
            self.reply(200, {"area": work.area("circle", float(query["r"]))})
        elif url.path == "/primes":
            self.reply(200, {"primes": work.primes(int(query["n"]))})
        else:
            self.reply(404, {"error": f"no such path {url.path}"})

    def do_POST(self):
        text = self.rfile.read(int(self.headers["Content-Length"])).decode()
        if urlsplit(self.path).path == "/words":
            self.reply(200, work.count_words(text))
        else:
            self.reply(404, {"error": "only /words takes a POST"})

    def reply(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(port_file: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file.write_text(str(server.server_address[1]))
    try:
        server.serve_forever()
    finally:
        server.server_close()
