#!/usr/bin/env python3
"""A fake EC2 instance metadata service (IMDSv2) for one TCP connection on stdin/stdout.

QEMU starts it per guest connection to 169.254.169.254:80 through
  -netdev user,...,guestfwd=tcp:169.254.169.254:80-cmd:imds.py METADATA.json [LOG]
so it opens no host port. It serves every request of the connection (HTTP/1.1 keep-alive) until EOF.

METADATA.json:
  {"meta-data": {"instance-id": "i-0123", "public-keys": {"0=mykey": {"openssh-key": "ssh-..."}}, ...},
   "user-data": "#cloud-config\n...",            (optional; 404 when absent)
   "dynamic": {"instance-identity": {"document": "{...}"}},
   "require-token": true}                        (default true: IMDSv2 only, 401 without a token)
A nested object is a directory: GET lists its keys ("name/" for sub-directories). A key "0=name"
lists as "0=name" at its level and is reachable as "0/" (the EC2 public-keys convention).
Each request is appended to LOG (one line: method path status) when given.
"""

import json
import sys

TOKEN = "stoke-test-token-AQAEAKx"


def lookup(tree, parts):
    node = tree
    for p in parts:
        if not isinstance(node, dict):
            return None
        if p in node:
            node = node[p]
            continue
        alias = next((k for k in node if "=" in k and k.split("=", 1)[0] == p), None)
        if alias is None:
            return None
        node = node[alias]
    return node


def listing(node):
    lines = []
    for k, v in node.items():
        if "=" in k:
            lines.append(k)
        elif isinstance(v, dict):
            lines.append(k + "/")
        else:
            lines.append(k)
    return "\n".join(lines)


def respond(out, status, body=b"", headers=()):
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
              405: "Method Not Allowed"}.get(status, "X")
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}",
            "Content-Type: text/plain", "Server: EC2ws"]
    head += list(headers)
    out.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    out.flush()


def main():
    meta = json.load(open(sys.argv[1]))
    logf = open(sys.argv[2], "a") if len(sys.argv) > 2 else None
    require_token = meta.get("require-token", True)
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    while True:
        line = inp.readline()
        if not line:
            return
        if not line.strip():
            continue
        try:
            method, target, _ = line.decode("latin-1").split(" ", 2)
        except ValueError:
            respond(out, 400)
            return
        headers = {}
        while True:
            h = inp.readline()
            if not h or h in (b"\r\n", b"\n"):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length:
            inp.read(length)
        path = target.split("?", 1)[0]
        status, body, extra = route(meta, require_token, method, path, headers)
        if logf:
            logf.write(f"{method} {path} {status}\n")
            logf.flush()
        respond(out, status, body, extra)
        if headers.get("connection", "").lower() == "close":
            return


def route(meta, require_token, method, path, headers):
    if path == "/latest/api/token":
        if method != "PUT":
            return 405, b"", ()
        ttl = headers.get("x-aws-ec2-metadata-token-ttl-seconds")
        if not ttl or not ttl.isdigit() or not (1 <= int(ttl) <= 21600):
            return 400, b"", ()
        return 200, TOKEN.encode(), [f"X-Aws-Ec2-Metadata-Token-Ttl-Seconds: {ttl}"]
    if method not in ("GET", "HEAD"):
        return 405, b"", ()
    token = headers.get("x-aws-ec2-metadata-token")
    if token is not None and token != TOKEN:
        return 401, b"", ()
    if require_token and token is None:
        return 401, b"", ()
    if path in ("/latest", "/latest/"):
        return 200, b"dynamic\nmeta-data\nuser-data", ()
    if path == "/latest/user-data":
        ud = meta.get("user-data")
        if ud is None:
            return 404, b"", ()
        return 200, ud.encode() if isinstance(ud, str) else bytes(ud), ()
    for top in ("meta-data", "dynamic"):
        prefix = f"/latest/{top}"
        if path == prefix or path.startswith(prefix + "/"):
            parts = [p for p in path[len(prefix):].split("/") if p]
            node = lookup(meta.get(top, {}), parts)
            if node is None:
                return 404, b"", ()
            if isinstance(node, dict):
                return 200, listing(node).encode(), ()
            if isinstance(node, (list,)):
                return 200, "\n".join(map(str, node)).encode(), ()
            return 200, str(node).encode(), ()
    return 404, b"", ()


if __name__ == "__main__":
    main()
