"""A local Auto Scaling Query-API double for stoke's lifecycle tests.

moto (5.x) has no CompleteLifecycleAction or RecordLifecycleActionHeartbeat,
so this answers the two, strictly: the Action, every parameter (names and
values expected for the test), the form encoding, and the SigV4 signature,
recomputed independently with botocore's signer over the headers the client
says it signed. It can answer `Throttling` to the first N requests.

One pending launch action: after a CompleteLifecycleAction is accepted, any
further request answers ValidationError, as Auto Scaling does.

stdout: `PORT <n>` once listening, then one JSON line per request (the event
log the tests wait on). Usage:
  asg_double.py --group G --hook H --instance I --region R --key AK --secret SK [--throttle N]
"""

import argparse
from hashlib import sha256
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

NS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
PARAMS = {
    "CompleteLifecycleAction": {
        "AutoScalingGroupName", "LifecycleHookName", "InstanceId", "LifecycleActionResult",
    },
    "RecordLifecycleActionHeartbeat": {
        "AutoScalingGroupName", "LifecycleHookName", "InstanceId",
    },
}


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.throttle_left = args.throttle
        self.completed = False


def check_signature(handler, body, args):
    """The signature error, or None when botocore computes the same signature."""
    auth = handler.headers.get("Authorization", "")
    prefix = "AWS4-HMAC-SHA256 "
    if not auth.startswith(prefix):
        return "no AWS4-HMAC-SHA256 Authorization header"
    parts = dict(p.strip().split("=", 1) for p in auth[len(prefix):].split(","))
    amz_date = handler.headers.get("X-Amz-Date", "")
    scope = f"{args.key}/{amz_date[:8]}/{args.region}/autoscaling/aws4_request"
    if parts.get("Credential") != scope:
        return f"credential scope {parts.get('Credential')!r}, expected {scope!r}"
    signed = parts.get("SignedHeaders", "").split(";")
    for required in ("host", "x-amz-date", "content-type"):
        if required not in signed:
            return f"{required} is not signed ({signed})"
    headers = {h: handler.headers.get(h, "") for h in signed}
    if "x-amz-content-sha256" in headers and headers["x-amz-content-sha256"] != sha256(
            body).hexdigest():
        return "x-amz-content-sha256 is not the body's hash"
    req = AWSRequest(method=handler.command, url=f"http://{headers['host']}{handler.path}",
                     data=body, headers=headers)
    req.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(args.key, args.secret), "autoscaling", args.region)
    canonical = signer.canonical_request(req)
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    if parts.get("Signature") != expected:
        return f"signature mismatch; botocore's canonical request:\n{canonical}"
    return None


def check_params(params, args):
    action = params.get("Action")
    if action not in PARAMS:
        return f"unexpected Action {action!r}"
    if params.get("Version") != "2011-01-01":
        return f"Version {params.get('Version')!r}"
    got = set(params) - {"Action", "Version"}
    if got != PARAMS[action]:
        return f"parameters {sorted(got)}, expected {sorted(PARAMS[action])}"
    want = {"AutoScalingGroupName": args.group, "LifecycleHookName": args.hook,
            "InstanceId": args.instance}
    for k, v in want.items():
        if params[k] != v:
            return f"{k}={params[k]!r}, expected {v!r}"
    if action == "CompleteLifecycleAction" and params["LifecycleActionResult"] not in (
            "CONTINUE", "ABANDON"):
        return f"LifecycleActionResult={params['LifecycleActionResult']!r}"
    return None


def error_xml(code, message):
    return (f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>")


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def answer(self, status, body):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            # A barrier for the tests: every request answered before this one is logged.
            if self.path == "/sync":
                with state.lock:
                    print(json.dumps({"sync": True}), flush=True)
                self.answer(200, "")
            else:
                self.answer(405, error_xml("InvalidAction", "POST only"))

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            event = {"path": self.path}
            problem = None
            if self.path != "/":
                problem = f"path {self.path!r}"
            elif not self.headers.get("Content-Type", "").startswith(
                    "application/x-www-form-urlencoded"):
                problem = f"content-type {self.headers.get('Content-Type')!r}"
            params = {}
            if problem is None:
                try:
                    pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
                    params = dict(pairs)
                    if len(params) != len(pairs):
                        problem = "a repeated parameter"
                except ValueError as e:
                    problem = f"form body: {e}"
            event["action"] = params.get("Action")
            event["params"] = params
            problem = problem or check_params(params, state.args) or check_signature(
                self, body, state.args)
            with state.lock:
                if problem:
                    event["problem"] = problem
                    status, reply = 400, error_xml("DoubleRejected", problem)
                elif state.throttle_left > 0:
                    state.throttle_left -= 1
                    event["answer"] = "Throttling"
                    status, reply = 400, error_xml("Throttling", "Rate exceeded")
                elif state.completed:
                    event["answer"] = "ValidationError"
                    status, reply = 400, error_xml(
                        "ValidationError",
                        f"No active Lifecycle Action found with instance ID {state.args.instance}")
                else:
                    if event["action"] == "CompleteLifecycleAction":
                        state.completed = True
                    event["answer"] = "ok"
                    a = event["action"]
                    status, reply = 200, (
                        f'<{a}Response xmlns="{NS}"><{a}Result/><ResponseMetadata>'
                        f"<RequestId>r-2</RequestId></ResponseMetadata></{a}Response>")
                print(json.dumps(event), flush=True)
            self.answer(status, reply)

    return Handler


def main():
    p = argparse.ArgumentParser()
    for name in ("group", "hook", "instance", "region", "key", "secret"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--throttle", type=int, default=0)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(State(args)))
    print(f"PORT {server.server_address[1]}", flush=True)
    # Ends when the test closes stdin (or kills it).
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
