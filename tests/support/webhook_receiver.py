#!/usr/bin/env python3
"""A webhook receiver for the subscription tests: a real subscriber on 127.0.0.1.

Usage: webhook_receiver.py --port P --log FILE [--secret S] [--secret-for KEYID=S ...]

Every POST or PUT, to any path, is appended to FILE as one JSON line (flushed and
fsynced before the answer is sent):

  method, path, headers (lower-case name -> value), body_b64, content_type,
  signature_ok (true/false; null without an Authorization header), signature_error,
  key_id, payload (the notification as JSON: the body for application/json, for
  multipart/form-data the field whose value is a JSON object with `subscription_id`),
  form (multipart only: field name -> value), status (the code answered), received_at.

The path chooses the answer (the body is always `ok`):

  /seq/<c1>,<c2>,...,<cn>/<any>  the k-th request to this exact path gets ck, the last
                                 code once the list runs out
  /redirect/<any>                302 with `Location: /elsewhere`
  /slow/<seconds>/<any>          200 after sleeping that long (logged before the sleep)
  anything else                  200

Signatures are checked with requests-http-signature 0.1.0 (the library the original DSS
signed with). Its `verify` only recomputes the HMAC over the listed header values, so this
receiver also requires that `date` and `digest` are signed, that `Digest` is the SHA-256
of the body, and that `Date` is an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
"""

import argparse
import base64
import email.parser
import email.policy
import hashlib
import hmac
import http.server
import json
import os
import re
import sys
import threading
import time
import urllib.parse

import requests
import requests.structures
from requests_http_signature import HTTPSignatureAuth

# `verify` of requests-http-signature 0.1.0 reports a bad signature with `assert`.
if not __debug__:
    sys.exit("webhook_receiver.py must not run with python -O: signature checks rely on assert")

IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$"
)


class Receiver:
    def __init__(self, port, log_path, secret, secrets_by_key_id):
        self.port = port
        self.log_path = log_path
        self.secret = secret
        self.secrets_by_key_id = secrets_by_key_id
        self.lock = threading.Lock()
        self.counts = {}
        self.log = open(log_path, "a", encoding="utf-8")

    def secret_for(self, key_id):
        s = self.secrets_by_key_id.get(key_id, self.secret)
        if s is None:
            raise KeyError("no secret for keyId {!r}".format(key_id))
        return s.encode()

    def next_count(self, path):
        with self.lock:
            self.counts[path] = self.counts.get(path, 0) + 1
            return self.counts[path]

    def write(self, record):
        line = json.dumps(record, sort_keys=False) + "\n"
        with self.lock:
            self.log.write(line)
            self.log.flush()
            os.fsync(self.log.fileno())


def key_id_of(authorization):
    if authorization is None:
        return None
    try:
        scheme, params = authorization.split(" ", 1)
        for item in params.split(","):
            k, _, v = item.partition("=")
            if k.strip() == "keyId":
                return v.strip().strip('"')
    except ValueError:
        pass
    return None


def check_signature(receiver, method, path, headers, body):
    """(signature_ok, signature_error): None/None without an Authorization header."""
    if "Authorization" not in headers:
        return None, None
    try:
        prepared = requests.Request(
            method, "http://127.0.0.1:{}{}".format(receiver.port, path), headers=dict(headers.items()), data=body
        ).prepare()
        # prepare() may add or rewrite Content-Type, Content-Length, ...: verify what arrived.
        prepared.headers = requests.structures.CaseInsensitiveDict(headers.items())
        prepared.body = body
        HTTPSignatureAuth.verify(prepared, key_resolver=lambda key_id, algorithm: receiver.secret_for(key_id))
        signed = HTTPSignatureAuth.get_sig_struct(prepared).get("headers", "date").lower().split(" ")
        for h in ("date", "digest"):
            if h not in signed:
                return False, "header {!r} is not signed (signed: {!r})".format(h, " ".join(signed))
        digest = headers.get("Digest")
        if digest is None:
            return False, "no Digest header"
        sha256 = None
        for item in digest.split(","):
            alg, _, value = item.strip().partition("=")
            if alg.lower() == "sha-256":
                sha256 = value
        if sha256 is None:
            return False, "Digest has no SHA-256 value: {!r}".format(digest)
        expected = base64.b64encode(hashlib.sha256(body).digest()).decode()
        if not hmac.compare_digest(sha256, expected):
            return False, "Digest {!r} does not match the body (SHA-256={})".format(digest, expected)
        date = headers.get("Date")
        if date is None or not IMF_FIXDATE.match(date):
            return False, "Date {!r} is not an IMF-fixdate".format(date)
        return True, None
    except AssertionError as e:
        return False, "verify failed: {}".format(str(e) or "signature mismatch")
    except Exception as e:  # missing signed header, bad base64, unknown key, ...
        return False, "verify failed: {}: {}".format(type(e).__name__, e)


def parse_form(content_type, body):
    """Field name -> value of a multipart/form-data body."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not msg.is_multipart():
        raise ValueError("not a multipart body")
    form = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name is None:
            continue
        value = part.get_payload(decode=True) or b""
        form[name] = value.decode("utf-8")
    return form


def payload_of_form(form):
    for value in form.values():
        try:
            doc = json.loads(value)
        except ValueError:
            continue
        if isinstance(doc, dict) and "subscription_id" in doc:
            return doc
    return None


def answer_for(receiver, path):
    """(status, extra headers, seconds to sleep) for a request to `path`."""
    route = urllib.parse.urlsplit(path).path
    parts = route.split("/")
    if len(parts) >= 3 and parts[1] == "seq":
        try:
            codes = [int(c) for c in parts[2].split(",")]
        except ValueError:
            codes = [200]
        k = receiver.next_count(path)
        return codes[min(k, len(codes)) - 1], {}, 0
    if len(parts) >= 2 and parts[1] == "redirect":
        return 302, {"Location": "/elsewhere"}, 0
    if len(parts) >= 3 and parts[1] == "slow":
        try:
            seconds = float(parts[2])
        except ValueError:
            seconds = 0
        return 200, {}, seconds
    return 200, {}, 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "webhook-receiver"

    def log_message(self, format, *args):
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

    def handle_delivery(self):
        receiver = self.server.receiver
        received_at = time.time()
        body = self.read_body()
        # Case-insensitive: HTTP/1 clients such as hyper send lower-case header names.
        headers = requests.structures.CaseInsensitiveDict()
        for name, value in self.headers.items():
            headers[name] = value if name not in headers else headers[name] + ", " + value
        lower = {k.lower(): v for k, v in headers.items()}
        content_type = self.headers.get("Content-Type")
        signature_ok, signature_error = check_signature(receiver, self.command, self.path, headers, body)
        payload = form = None
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type == "application/json":
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
        elif media_type == "multipart/form-data":
            try:
                form = parse_form(content_type, body)
                payload = payload_of_form(form)
            except Exception as e:
                print("webhook_receiver: unparsable multipart body: {}".format(e), file=sys.stderr)
        status, extra, sleep = answer_for(receiver, self.path)
        receiver.write(
            {
                "method": self.command,
                "path": self.path,
                "headers": lower,
                "body_b64": base64.b64encode(body).decode(),
                "content_type": content_type,
                "signature_ok": signature_ok,
                "signature_error": signature_error,
                "key_id": key_id_of(headers.get("Authorization")),
                "payload": payload,
                "form": form,
                "status": status,
                "received_at": received_at,
            }
        )
        if sleep:
            time.sleep(sleep)
        try:
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The sender gave up (a delivery timeout): expected, nothing to report.
            self.close_connection = True

    do_POST = handle_delivery
    do_PUT = handle_delivery


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--secret", help="HMAC secret for any keyId without its own")
    p.add_argument("--secret-for", action="append", default=[], metavar="KEYID=S", help="HMAC secret of one keyId")
    args = p.parse_args()
    by_key_id = {}
    for item in args.secret_for:
        k, sep, v = item.partition("=")
        if not sep:
            p.error("--secret-for wants KEYID=SECRET, got {!r}".format(item))
        by_key_id[k] = v
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.receiver = Receiver(args.port, args.log, args.secret, by_key_id)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
