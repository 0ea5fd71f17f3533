"""Recomputes the SigV4 signature of one request as it arrived, with botocore (what the AWS CLI
and boto3 sign with, checked against AWS every day). Reads JSON on stdin:
{"access_key", "secret_key", "token", "url", "method", "headers": [[name, value], ...], "body_b64"}
and prints {"expected", "got", "signed_headers", "scope"}. Only the headers the request says it
signed are given to botocore, exactly as they arrived: what AWS's own check does."""
import base64
import json
import sys

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

req = json.load(sys.stdin)
headers = {}
for name, value in req["headers"]:
    headers[name.lower()] = value
authorization = headers["authorization"]
algorithm, fields = authorization.split(" ", 1)
parts = dict(p.strip().split("=", 1) for p in fields.split(","))
signed = parts["SignedHeaders"].split(";")
scope = parts["Credential"].split("/")  # key, date, region, service, aws4_request
request = AWSRequest(
    method=req["method"],
    url=req["url"],
    headers={name: headers[name] for name in signed},
    data=base64.b64decode(req["body_b64"]),
)
request.context["timestamp"] = headers["x-amz-date"]
auth = SigV4Auth(Credentials(req["access_key"], req["secret_key"], req.get("token")), scope[3], scope[2])
canonical = auth.canonical_request(request)
expected = auth.signature(auth.string_to_sign(request, canonical), request)
print(json.dumps({
    "algorithm": algorithm,
    "expected": expected,
    "got": parts["Signature"],
    "signed_headers": signed,
    "scope": scope,
}))
