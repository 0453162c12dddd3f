#!/usr/bin/env python3
"""A fanout stage written as an AWS Lambda function, with nothing but the
Python standard library: the handler below, and a small runtime loop that
speaks the Lambda Runtime API (what AWS's own runtime clients do).

fanout starts this script as a worker process with AWS_LAMBDA_RUNTIME_API
set, sends each task as an event {"stage", "task", "attempt", "params",
"records": [{column: value, ...}, ...]}, and takes {"records": [...]} back.
The same file runs unchanged on AWS Lambda as a custom runtime.
"""

import json
import os
import sys
import traceback
import urllib.request

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"


def handler(event, context):
    """Tags each order with a size band and its amount with tax."""
    rate = event.get("params", {}).get("tax", 0.2)
    out = []
    for r in event["records"]:
        amount = r["amount"]  # None where the csv field is empty
        if amount is None:
            band, gross = "unknown", None
        else:
            band = "large" if amount >= 500 else "small"
            gross = round(amount * (1 + rate), 2)
        out.append({"id": r["id"], "country": r["country"], "band": band, "gross": gross})
    return {"records": out}


class Context:
    """The parts of Lambda's context object a handler usually reads."""

    def __init__(self, headers):
        self.aws_request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        self.invoked_function_arn = headers["Lambda-Runtime-Invoked-Function-Arn"]
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self._deadline_ms = int(headers["Lambda-Runtime-Deadline-Ms"])

    def get_remaining_time_in_millis(self):
        import time
        return max(0, self._deadline_ms - int(time.time() * 1000))


def post(path, body, error_type=None):
    req = urllib.request.Request(API + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if error_type:
        req.add_header("Lambda-Runtime-Function-Error-Type", error_type)
    urllib.request.urlopen(req).read()


def error_body(e):
    return {"errorMessage": str(e), "errorType": type(e).__name__,
            "stackTrace": traceback.format_tb(e.__traceback__)}


def main():
    while True:
        with urllib.request.urlopen(API + "/invocation/next") as resp:
            event = json.loads(resp.read())
            ctx = Context(resp.headers)
        try:
            result = handler(event, ctx)
        except Exception as e:  # the function's error, reported to fanout
            post(f"/invocation/{ctx.aws_request_id}/error", error_body(e), "Unhandled")
            continue
        post(f"/invocation/{ctx.aws_request_id}/response", result)


if __name__ == "__main__":
    sys.exit(main())
