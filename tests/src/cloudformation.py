"""The CloudFormation templates in deploy/cloudformation, read and deployed for the tests.

    cloudformation.py deploy ENDPOINT TEMPLATE STACK [KEY=VALUE ...]
        Creates the stack in the emulator at ENDPOINT, waits for it, prints its outputs (JSON).
    cloudformation.py policies TEMPLATE
        Prints each IAM role's inline policy statements with the parameters' defaults filled in,
        the region and account as `*` (the form of deploy/iam/*.json), as JSON.
    cloudformation.py template TEMPLATE
        Prints the template as JSON.
    cloudformation.py unnamed TEMPLATE
        Prints the resources no output names (a JSON list; empty: the outputs name them all).
    cloudformation.py iam ROOT
        Writes deploy/iam/{capture,relay,shipping}.json from the templates' roles (the templates
        are the one source of the policies; `scripts/gen-iam` runs this).
    cloudformation.py agree ENDPOINT BRIDGE_TEMPLATE SHIPPING_TEMPLATE
        Compares the settings the templates declare (parameter defaults) with the resources
        `bridge setup` and `shipping setup` created at ENDPOINT under the same names; prints the
        disagreements as a JSON list (empty: they agree).

The templates use only the long form of intrinsic functions (`Fn::Sub`, `Ref`), so plain YAML
reads them. Runs with the Python that runs moto (boto3 and PyYAML come with it).
"""

import json
import os
import re
import sys
import time

import boto3
import yaml

PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "*", "AWS::AccountId": "*", "AWS::StackName": "stack"}


def session():
    # The SDKs' variable (AWS_REGION) first: boto3 reads only AWS_DEFAULT_REGION.
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.session.Session(region_name=region)


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def defaults(template):
    return {name: p.get("Default") for name, p in template.get("Parameters", {}).items()}


def resolve(node, params):
    """The value of `node` with parameters and pseudo parameters filled in; what depends on
    other resources (GetAtt, ImportValue) is left as a marker."""
    if isinstance(node, list):
        return [resolve(n, params) for n in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, value), = node.items()
        if key == "Ref":
            if value in params:
                return params[value]
            return PSEUDO.get(value, f"<Ref {value}>")
        if key == "Fn::Sub":
            text, extra = (value, {}) if isinstance(value, str) else (value[0], value[1])
            local = {k: resolve(v, params) for k, v in extra.items()}

            def sub(m):
                name = m.group(1)
                if name in local:
                    return str(local[name])
                if name in params:
                    return str(params[name])
                return str(PSEUDO.get(name, "${" + name + "}"))

            return re.sub(r"\$\{([^}]+)\}", sub, text)
        if key == "Fn::Join":
            sep, items = value
            return sep.join(str(i) for i in resolve(items, params))
        if key == "Fn::Split":
            sep, text = value
            return str(resolve(text, params)).split(sep)
        if key in ("Fn::GetAtt", "Fn::ImportValue"):
            return f"<{key} {json.dumps(value)}>"
    return {k: resolve(v, params) for k, v in node.items()}


def resources(template):
    params = defaults(template)
    return {name: resolve(r, params) for name, r in template["Resources"].items()}


def policies(path):
    out = {}
    for name, r in resources(load(path)).items():
        if r["Type"] != "AWS::IAM::Role":
            continue
        for p in r["Properties"].get("Policies", []):
            out[name] = p["PolicyDocument"]
    return out


def deploy(endpoint, path, stack, pairs):
    cfn = session().client("cloudformation", endpoint_url=endpoint)
    with open(path, encoding="utf-8") as f:
        body = f.read()
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in (p.split("=", 1) for p in pairs)]
    cfn.create_stack(StackName=stack, TemplateBody=body, Parameters=params, Capabilities=["CAPABILITY_IAM"])
    for _ in range(600):
        s = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        if s["StackStatus"] == "CREATE_COMPLETE":
            return {o["OutputKey"]: o["OutputValue"] for o in s.get("Outputs", [])}
        if s["StackStatus"].endswith("FAILED") or s["StackStatus"].startswith("ROLLBACK"):
            events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
            reasons = [e.get("ResourceStatusReason") for e in events if e.get("ResourceStatusReason")]
            raise SystemExit(f"stack {stack}: {s['StackStatus']}: {reasons}")
        time.sleep(0.2)
    raise SystemExit(f"stack {stack} was not created within 120 s")


class Agreement:
    def __init__(self):
        self.problems = []

    def same(self, what, declared, actual):
        if declared != actual:
            self.problems.append({"what": what, "template": declared, "setup": actual})


def queue_settings(sqs, name):
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(a["RedrivePolicy"]) if "RedrivePolicy" in a else None
    return {
        "MessageRetentionPeriod": int(a.get("MessageRetentionPeriod", 0)),
        "SqsManagedSseEnabled": a.get("SqsManagedSseEnabled", "false") == "true",
        "VisibilityTimeout": int(a.get("VisibilityTimeout", 30)),
        "RedrivePolicy": redrive
        and {
            "deadLetterQueue": redrive["deadLetterTargetArn"].rsplit(":", 1)[-1],
            "maxReceiveCount": int(redrive["maxReceiveCount"]),
        },
    }


def declared_queue(props, by_logical):
    redrive = props.get("RedrivePolicy")
    if redrive:
        target = json.loads(redrive["deadLetterTargetArn"][len("<Fn::GetAtt ") : -1])[0]
        redrive = {
            "deadLetterQueue": by_logical[target]["Properties"]["QueueName"],
            "maxReceiveCount": int(redrive["maxReceiveCount"]),
        }
    return {
        "MessageRetentionPeriod": int(props.get("MessageRetentionPeriod", 345600)),
        "SqsManagedSseEnabled": bool(props.get("SqsManagedSseEnabled", False)),
        "VisibilityTimeout": int(props.get("VisibilityTimeout", 30)),
        "RedrivePolicy": redrive,
    }


def target_settings(t):
    dlq = (t.get("DeadLetterConfig") or {}).get("Arn")
    retry = t.get("RetryPolicy")
    return {
        "Id": t["Id"],
        "InputTransformer": t.get("InputTransformer"),
        "DeadLetterQueue": dlq and dlq.rsplit(":", 1)[-1],
        "RetryPolicy": retry and {k: int(v) for k, v in retry.items()},
    }


def declared_target(t, by_logical):
    dlq = (t.get("DeadLetterConfig") or {}).get("Arn")
    if dlq:
        logical = json.loads(dlq[len("<Fn::GetAtt ") : -1])[0]
        dlq = by_logical[logical]["Properties"]["QueueName"]
    retry = t.get("RetryPolicy")
    return {
        "Id": t["Id"],
        "InputTransformer": t.get("InputTransformer"),
        "DeadLetterQueue": dlq,
        "RetryPolicy": retry and {k: int(v) for k, v in retry.items()},
    }


def table_settings(dynamo, name):
    t = dynamo.describe_table(TableName=name)["Table"]
    ttl = dynamo.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    stream = t.get("StreamSpecification") or {}
    return {
        "KeySchema": t["KeySchema"],
        "AttributeDefinitions": t["AttributeDefinitions"],
        "BillingMode": (t.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED"),
        "StreamViewType": stream.get("StreamViewType") if stream.get("StreamEnabled") else None,
        "TimeToLive": ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") else None,
    }


def declared_table(props):
    ttl = props.get("TimeToLiveSpecification") or {}
    return {
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
        "StreamViewType": (props.get("StreamSpecification") or {}).get("StreamViewType"),
        "TimeToLive": ttl.get("AttributeName") if ttl.get("Enabled") else None,
    }


def agree(endpoint, bridge_path, shipping_path):
    boto = session()
    client = lambda service: boto.client(service, endpoint_url=endpoint)  # noqa: E731
    kinesis, events, dynamo, s3, sqs = (client(s) for s in ("kinesis", "events", "dynamodb", "s3", "sqs"))
    check = Agreement()
    for path in (bridge_path, shipping_path):
        by_logical = resources(load(path))
        for logical, r in by_logical.items():
            props = r.get("Properties", {})
            kind = r["Type"]
            if kind == "AWS::Kinesis::Stream":
                s = kinesis.describe_stream_summary(StreamName=props["Name"])["StreamDescriptionSummary"]
                check.same(f"{logical} shards", int(props["ShardCount"]), s["OpenShardCount"])
                check.same(
                    f"{logical} encryption",
                    props.get("StreamEncryption"),
                    {"EncryptionType": s.get("EncryptionType"), "KeyId": s.get("KeyId")},
                )
                check.same(f"{logical} retention hours", int(props.get("RetentionPeriodHours", 24)), s["RetentionPeriodHours"])
            elif kind == "AWS::Events::EventBus":
                events.describe_event_bus(Name=props["Name"])
            elif kind == "AWS::Events::Archive":
                a = events.describe_archive(ArchiveName=props["ArchiveName"])
                check.same(f"{logical} retention days", int(props["RetentionDays"]), a.get("RetentionDays"))
                check.same(f"{logical} source", props["SourceArn"].startswith("<Fn::GetAtt"), a["EventSourceArn"].endswith(":event-bus/" + by_logical["EventBus"]["Properties"]["Name"]))
            elif kind == "AWS::DynamoDB::Table":
                check.same(logical, declared_table(props), table_settings(dynamo, props["TableName"]))
            elif kind == "AWS::S3::Bucket":
                name = props["BucketName"]
                enc = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
                algo = [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in enc]
                declared = [r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]]
                check.same(f"{logical} encryption", declared, algo)
                block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
                check.same(f"{logical} public access block", props["PublicAccessBlockConfiguration"], block)
                rules = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
                actual = [
                    {
                        "Id": r.get("ID"),
                        "Status": r["Status"],
                        "Prefix": (r.get("Filter") or {}).get("Prefix", r.get("Prefix")),
                        "ExpirationInDays": r["Expiration"]["Days"],
                    }
                    for r in rules
                ]
                check.same(f"{logical} lifecycle", [{**r, "ExpirationInDays": int(r["ExpirationInDays"])} for r in props["LifecycleConfiguration"]["Rules"]], actual)
            elif kind == "AWS::SQS::Queue":
                check.same(logical, declared_queue(props, by_logical), queue_settings(sqs, props["QueueName"]))
            elif kind == "AWS::Events::Rule":
                rule = events.describe_rule(Name=props["Name"], EventBusName=props["EventBusName"])
                check.same(f"{logical} pattern", props["EventPattern"], json.loads(rule["EventPattern"]))
                check.same(f"{logical} state", props.get("State", "ENABLED"), rule["State"])
                targets = events.list_targets_by_rule(Rule=props["Name"], EventBusName=props["EventBusName"])["Targets"]
                declared = [declared_target(t, by_logical) for t in props["Targets"]]
                actual = [target_settings(t) for t in targets]
                check.same(f"{logical} targets", declared, actual)
    return check.problems


def unnamed(path):
    template = load(path)
    named = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "Ref" and isinstance(value, str):
                    named.add(value)
                elif key == "Fn::GetAtt":
                    named.add(value[0])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(template.get("Outputs", {}))
    return sorted(set(template["Resources"]) - named)


# Which role of which template each policy file is.
IAM_FILES = {
    "capture.json": ("outbox-bridge.yaml", "CaptureRole"),
    "relay.json": ("outbox-bridge.yaml", "RelayRole"),
    "shipping.json": ("shipping.yaml", "ShippingRole"),
}


def write_iam(root):
    for file, (template, role) in IAM_FILES.items():
        document = policies(os.path.join(root, "deploy", "cloudformation", template))[role]
        with open(os.path.join(root, "deploy", "iam", file), "w", encoding="utf-8") as f:
            f.write(json.dumps(document, indent=2) + "\n")


def main(argv):
    if len(argv) >= 5 and argv[1] == "deploy":
        print(json.dumps(deploy(argv[2], argv[3], argv[4], argv[5:])))
    elif len(argv) == 3 and argv[1] == "policies":
        print(json.dumps(policies(argv[2])))
    elif len(argv) == 3 and argv[1] == "template":
        print(json.dumps(load(argv[2]), default=str))
    elif len(argv) == 3 and argv[1] == "unnamed":
        print(json.dumps(unnamed(argv[2])))
    elif len(argv) == 3 and argv[1] == "iam":
        write_iam(argv[2])
    elif len(argv) == 5 and argv[1] == "agree":
        print(json.dumps(agree(argv[2], argv[3], argv[4])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
