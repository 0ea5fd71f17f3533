# Starts moto's server with one emulator bug fixed: moto's Kinesis Shard.put_record is "not safe
# for concurrency" (its own comment) — two PutRecords handled at once by its threaded server can
# draw the same sequence number, and the second record silently replaces the first. Real Kinesis
# never drops an accepted record, so the tests run against an emulator that does not either.
# The fix also makes put_record O(1): moto recomputed the last sequence number by listing every
# key, which is why its streams slowed down as they grew.
import copy
import sys
import threading

import moto  # noqa: E402

# Every patch below replaces a moto internal as it is in this version; another one would be
# patched blind. scripts/bootstrap installs exactly this version.
PINNED = "5.2.1"
if moto.__version__ != PINNED:
    raise SystemExit(f"moto_launcher.py is written for moto {PINNED}, found {moto.__version__}: run scripts/bootstrap")

from moto.kinesis import models as kinesis  # noqa: E402

_lock = threading.Lock()


def put_record(self, partition_key, data, explicit_hash_key):
    with _lock:
        last = getattr(self, "_outbox_last_sequence", None)
        if last is None or last not in self.records:
            last = self.get_max_sequence_number() if self.records else 0
        sequence_number = last + 1
        self.records[sequence_number] = kinesis.Record(
            partition_key, data, sequence_number, explicit_hash_key
        )
        self._outbox_last_sequence = sequence_number
        return str(sequence_number)


kinesis.Shard.put_record = put_record

# Second bug, same cause: moto's DynamoDB TransactWriteItems deep-copies the tables it touches and,
# when the transaction is cancelled (a condition failed — a normal outcome for an inbox), puts the
# copies back, discarding every write other requests made to those tables meanwhile, stream records
# included. One lock around DynamoDB's writes makes each of them atomic, as DynamoDB's are.
from moto.dynamodb import models as dynamodb  # noqa: E402

_dynamodb_lock = threading.RLock()


def _locked(method):
    def wrapper(self, *args, **kwargs):
        with _dynamodb_lock:
            return method(self, *args, **kwargs)

    return wrapper


for _name in ("put_item", "update_item", "delete_item", "batch_write_item"):
    if hasattr(dynamodb.DynamoDBBackend, _name):
        setattr(dynamodb.DynamoDBBackend, _name, _locked(getattr(dynamodb.DynamoDBBackend, _name)))

# Third, same method: moto backs up a transaction by deep-copying every table it touches (once per
# item) and restores the copies when it is cancelled. The copy costs time in the size of the table
# and of its stream, so a service's inbox slowed down as it filled (quadratic over a long run), and
# the restored copies carried a *copy* of the stream shard while every open stream iterator still
# pointed at the original: readers never saw another record. This version checks every condition
# first and writes only when all hold (so a cancellation touches nothing); a write that still fails
# is undone item by item and the stream trimmed back. Same answers as moto's, in time per item.
from moto.dynamodb.comparisons import get_filter_expression  # noqa: E402
from moto.dynamodb.exceptions import (  # noqa: E402
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models.dynamo_type import DynamoType  # noqa: E402


def _key_of(table, op_type, op):
    attrs = op["Item"] if op_type == "Put" else op["Key"]
    hash_value = DynamoType(attrs[table.hash_key_attr])
    range_value = None
    if table.range_key_attr is not None:
        range_value = DynamoType(attrs[table.range_key_attr])
    return hash_value, range_value


def _restore(table, hash_value, range_value, item):
    if range_value is not None:
        if item is None:
            table.items[hash_value].pop(range_value, None)
        else:
            table.items[hash_value][range_value] = item
    elif item is None:
        table.items.pop(hash_value, None)
    else:
        table.items[hash_value] = item


def _apply(self, op_type, op, key):
    names = op.get("ExpressionAttributeNames")
    values = op.get("ExpressionAttributeValues")
    condition = op.get("ConditionExpression")
    if op_type == "Put":
        self.put_item(op["TableName"], op["Item"], condition_expression=condition,
                      expression_attribute_names=names, expression_attribute_values=values)
    elif op_type == "Delete":
        self.delete_item(op["TableName"], key, condition_expression=condition,
                         expression_attribute_names=names, expression_attribute_values=values)
    elif op_type == "Update":
        self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"],
                         condition_expression=condition, expression_attribute_names=names,
                         expression_attribute_values=values)


def transact_write_items(self, transact_items):
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _dynamodb_lock:
        targets = set()
        errors = []
        planned = []
        for entry in transact_items:
            if len(entry) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            try:
                if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                    raise ValueError("Unsupported transaction operation")
                table = self.get_table(op["TableName"])
                key = op["Key"] if op_type != "Put" else {
                    a: op["Item"][a]
                    for a in (table.hash_key_attr, table.range_key_attr)
                    if a is not None
                }
                unique = (str(op["TableName"]), str(dict(sorted(key.items()))))
                if unique in targets:
                    raise MultipleTransactionsException()
                targets.add(unique)
                current = self.get_item(op["TableName"], key)
                condition = op.get("ConditionExpression")
                if condition is not None:
                    check = get_filter_expression(
                        condition,
                        op.get("ExpressionAttributeNames"),
                        op.get("ExpressionAttributeValues"),
                    )
                    if not check.expr(current):
                        old = None
                        if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                            old = current.to_json()["Attributes"]
                        errors.append(("ConditionalCheckFailed", "The conditional request failed", old))
                        continue
                planned.append((op_type, op, table, key))
                errors.append((None, None, None))
            except (MultipleTransactionsException, MockValidationException):
                raise
            except ConditionalCheckFailed as e:
                errors.append(("ConditionalCheckFailed", str(e.message), None))
            except Exception as e:  # noqa: E722 moto reports any other failure as a reason
                errors.append((type(e).__name__, str(e), None))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)

        shards = {
            name: (table.stream_shard, len(table.stream_shard.items))
            for name, table in self.tables.items()
            if getattr(table, "stream_shard", None) is not None
        }
        undo = []
        try:
            for op_type, op, table, key in planned:
                if op_type == "ConditionCheck":
                    continue
                hash_value, range_value = _key_of(table, op_type, op)
                undo.append((table, hash_value, range_value,
                             copy.deepcopy(table.get_item(hash_value, range_value))))
                _apply(self, op_type, op, key)
        except Exception as e:
            for table, hash_value, range_value, item in reversed(undo):
                _restore(table, hash_value, range_value, item)
            for name, (shard, length) in shards.items():
                del shard.items[length:]
            if isinstance(e, (MultipleTransactionsException, MockValidationException)):
                raise
            raise TransactionCanceledException(
                [(type(e).__name__, str(e), None)] + [(None, None, None)] * (len(errors) - 1)
            )


dynamodb.DynamoDBBackend.transact_write_items = transact_write_items

# Fourth: moto's GetRecords walks a shard from its first record to find where the iterator
# points, so every read cost time in the size of the shard. Sequence numbers are consecutive
# (put_record above), so the next one is found by lookup; any other shape falls back to moto's.
_get_records = kinesis.Shard.get_records


def get_records(self, last_sequence_id, limit):
    last = int(last_sequence_id)
    if not self.records:
        return [], last, 0
    newest = self.records[next(reversed(self.records))]
    if (last + 1) not in self.records and newest.sequence_number > last:
        return _get_records(self, last_sequence_id, limit)
    results = []
    n = last + 1
    while n in self.records and (limit is None or len(results) < limit):
        results.append(self.records[n])
        last = n
        n += 1
    behind = newest.created_at - results[-1].created_at if results else 0.0
    return results, last, int(behind * 1000)


kinesis.Shard.get_records = get_records


# Resharding, as Kinesis does it. moto moved a split or merged shard's records into its children
# (re-put, so readers saw every record twice and out of order), kept routing new records to the
# closed parent (the first shard whose hash range holds the key), and never ended a closed
# shard's reads. On Kinesis the parent keeps its records and takes no new ones, the children
# start empty, and GetRecords past a closed shard's last record answers NextShardIterator null —
# the signal a reader needs to finish the parent before it reads the children.
from collections import OrderedDict  # noqa: E402


def _keeping_records(method, shard_ids):
    def wrapper(self, *args):
        shards = [self.shards.get(args[i]) for i in shard_ids]
        with _lock:  # no record is put while the parents' records are set aside
            kept = [(s, s.records) for s in shards if s is not None]
            for s, _ in kept:
                s.records = OrderedDict()
            try:
                return method(self, *args)
            finally:
                for s, records in kept:
                    s.records = records

    return wrapper


kinesis.Stream.split_shard = _keeping_records(kinesis.Stream.split_shard, [0])
kinesis.Stream.merge_shards = _keeping_records(kinesis.Stream.merge_shards, [0, 1])

_get_shard_for_key = kinesis.Stream.get_shard_for_key


def get_shard_for_key(self, partition_key, explicit_hash_key):
    shard = _get_shard_for_key(self, partition_key, explicit_hash_key)  # moto's validation
    if shard is None or shard.is_open:
        return shard
    if explicit_hash_key:
        key = int(explicit_hash_key)
    else:
        key = int(kinesis.md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
    for candidate in self.shards.values():
        if candidate.is_open and candidate.starting_hash <= key <= candidate.ending_hash:
            return candidate
    return None


kinesis.Stream.get_shard_for_key = get_shard_for_key

_backend_get_records = kinesis.KinesisBackend.get_records


def backend_get_records(self, stream_arn, shard_iterator, limit):
    next_iterator, records, behind = _backend_get_records(self, stream_arn, shard_iterator, limit)
    stream_name, shard_id, last = kinesis.decompose_shard_iterator(shard_iterator)
    shard = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name).get_shard(shard_id)
    if not shard.is_open:
        position = int(records[-1].sequence_number) if records else int(last)
        if not shard.records or position >= shard.get_max_sequence_number():
            next_iterator = None
    return next_iterator, records, behind


kinesis.KinesisBackend.get_records = backend_get_records

# Fifth: costs that grow with a queue, paid on every call. moto's SQS checks each message's
# visibility and delay by reading the clock once per message, computes every attribute (three
# counts over all messages) to read one of them on each SendMessage, and does so again per
# received message for its retention period. The clock is read once per call here and the
# retention period read directly; the answers are the same.
from moto.core.utils import unix_time, unix_time_millis  # noqa: E402
from moto.sqs import models as sqs  # noqa: E402


def _messages(self):
    now = unix_time_millis()
    return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]


def _delayed(self):
    now = unix_time_millis()
    return sum(1 for m in self._messages if now < m.delayed_until)


def _not_visible(self):
    now = unix_time_millis()
    return sum(1 for m in self._messages if not now > m.visible_at)


# SendMessage reads Queue.attributes only for its configured settings: while it runs, the counts
# in it are not computed (they are never read on that path).
_settings_only = threading.local()


def _counted(count):
    def get(self):
        return 0 if getattr(_settings_only, "on", False) else count(self)

    return property(get)


sqs.Queue.messages = property(_messages)
sqs.Queue.approximate_number_of_messages = _counted(lambda self: len(_messages(self)))
sqs.Queue.approximate_number_of_messages_delayed = _counted(_delayed)
sqs.Queue.approximate_number_of_messages_not_visible = _counted(_not_visible)
_send_message = sqs.SQSBackend.send_message


def send_message(self, *args, **kwargs):
    _settings_only.on = True
    try:
        return _send_message(self, *args, **kwargs)
    finally:
        _settings_only.on = False


sqs.SQSBackend.send_message = send_message


def is_message_valid_based_on_retention_period(self, queue_name, message):
    retention = int(self.get_queue(queue_name).message_retention_period)
    return retention + message.sent_timestamp / 1000 > unix_time()


sqs.SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period

# Seventh, found by the chaos run: moto's DeleteMessage rebuilds a queue's message list without
# the lock SendMessage appends under, so a message sent while another is deleted could vanish
# (real SQS never loses an accepted message). It also scanned every message, twice, in Python, so
# a queue with a backlog slowed every delete. Deletes take the same lock and find their message
# by its receipt handle (an index kept as handles are issued), removing it in place.
import weakref  # noqa: E402

_by_receipt_handle = weakref.WeakValueDictionary()
_mark_received = sqs.Message.mark_received


def mark_received(self, *args, **kwargs):
    _mark_received(self, *args, **kwargs)
    _by_receipt_handle[self.receipt_handle] = self


sqs.Message.mark_received = mark_received


def delete_message(self, receipt_handle):
    with self._messages_lock:
        if receipt_handle in self.deleted_messages:
            return
        message = _by_receipt_handle.get(receipt_handle)
        if message is None or message not in self._messages:
            raise sqs.ReceiptHandleIsInvalid()
        self._messages.remove(message)
        self.pending_messages.discard(message)
        self.deleted_messages.update(message.all_receipt_handles)


sqs.Queue.delete_message = delete_message


# DynamoDB compares only values of one type: a condition such as `aggregate_version < :v` on an
# item whose aggregate_version is a string is false (the condition fails), not an error. moto
# compared the Python values and raised TypeError, which its TransactWriteItems reported as a
# cancellation reason no AWS answer has.
from moto.dynamodb import comparisons as _comparisons  # noqa: E402


def _same_type_only(expr):
    def wrapper(self, item):
        try:
            return expr(self, item)
        except TypeError:
            return False

    return wrapper


for _cls in (
    _comparisons.OpLessThan,
    _comparisons.OpGreaterThan,
    _comparisons.OpLessThanOrEqual,
    _comparisons.OpGreaterThanOrEqual,
    _comparisons.FuncBetween,
):
    _cls.expr = _same_type_only(_cls.expr)


# Sixth: moto's EventBridge builds a new JSONPath parser (its grammar tables included) for every
# input path of every delivered event; a parsed path is immutable, so each is parsed once.
import functools  # noqa: E402

import jsonpath_ng.ext  # noqa: E402

jsonpath_ng.ext.parse = functools.lru_cache(maxsize=1024)(jsonpath_ng.ext.parse)


# EventBridge replays: moto sends every archived event to every rule of the bus. AWS replays only
# the events of [EventStartTime, EventEndTime] and, with Destination.FilterArns, only to those
# rules — what lets one consumer catch up without the others seeing the events again.
from moto.events import models as events_models  # noqa: E402


def _event_time(event):
    value = event.get("time")
    try:
        return float(value)
    except (TypeError, ValueError):
        from datetime import datetime

        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


# EventBridge also archives with a delay ("we recommend you wait 10 minutes before replaying"): an
# event that has just reached the bus may be in no replay yet. With OUTBOX_MOTO_ARCHIVE_LAG_SECS
# set, an archived event becomes replayable only that many seconds after it reached the archive.
import os  # noqa: E402
import time  # noqa: E402

ARCHIVE_LAG_SECS = float(os.environ.get("OUTBOX_MOTO_ARCHIVE_LAG_SECS") or 0)
_archived_at = {}
_send_to_events_archive = events_models.Rule._send_to_events_archive


def send_to_events_archive(self, resource_id, event):
    _archived_at[id(event)] = time.time()
    _send_to_events_archive(self, resource_id, event)


events_models.Rule._send_to_events_archive = send_to_events_archive


def _replayable(event):
    return _archived_at.get(id(event), 0.0) + ARCHIVE_LAG_SECS <= time.time()


def replay_events(self, archive):
    bus_name = self.destination["Arn"].split("/")[-1]
    only = set(self.destination.get("FilterArns") or [])
    start, end = float(self.event_start_time), float(self.event_end_time)
    backend = events_models.events_backends[self.account_id][self.region]
    bus = backend.describe_event_bus(bus_name)
    for event in list(archive.events):
        if not start <= _event_time(event) <= end or not _replayable(event):
            continue
        for rule in bus.rules.values():
            if only and rule.arn not in only:
                continue
            rule.send_to_targets(
                dict(event, **{"id": str(events_models.random.uuid4()), "replay-name": self.name}),
                transform_input=False,
            )
    self.state = events_models.ReplayState.COMPLETED
    self.end_time = events_models.unix_time()


events_models.Replay.replay_events = replay_events


# EventBridge delivers to a rule's targets after PutEvents has answered: a target that cannot take
# an event (a deleted queue, a refused message) never fails PutEvents. AWS then sends the event
# to the target's DeadLetterConfig queue with ERROR_CODE / ERROR_MESSAGE / RULE_ARN / TARGET_ARN
# attributes, or drops it if the target has none. moto instead raised the target's error out of
# PutEvents (the publisher then retried a call AWS had accepted) and ignored DeadLetterConfig.
import json  # noqa: E402
import logging  # noqa: E402

_send_to_targets = events_models.Rule.send_to_targets


def send_to_targets(self, original_event, transform_input=True):
    for target in list(self.targets):
        one = copy.copy(self)
        one.targets = [target]
        try:
            _send_to_targets(one, original_event, transform_input)
        except Exception as err:  # noqa: BLE001 - any target failure is the target's, as on AWS
            code = getattr(err, "code", None) or type(err).__name__
            message = getattr(err, "message", None) or str(err)
            dlq = (target.get("DeadLetterConfig") or {}).get("Arn")
            if not dlq:
                logging.warning("event dropped: target %s of %s failed: %s", target["Arn"], self.arn, code)
                continue
            from moto.sqs import sqs_backends

            event = dict(original_event)
            if "time" in event:
                try:
                    event["time"] = events_models.iso_8601_datetime_without_milliseconds(
                        events_models.utcfromtimestamp(float(event["time"]))
                    )
                except (TypeError, ValueError):
                    pass
            attribute = lambda value: {"DataType": "String", "StringValue": str(value)}  # noqa: E731
            sqs_backends[self.account_id][self.region_name].send_message(
                queue_name=dlq.split(":")[-1],
                message_body=json.dumps(event),
                message_attributes={
                    "ERROR_CODE": attribute(code),
                    "ERROR_MESSAGE": attribute(message),
                    "RULE_ARN": attribute(self.arn),
                    "TARGET_ARN": attribute(target["Arn"]),
                },
            )


events_models.Rule.send_to_targets = send_to_targets


# CloudFormation: `Ref` of an AWS::Events::EventBus or AWS::Events::Archive is its name on AWS;
# moto has no physical id for them and hands out the Python object's repr instead (so a stack's
# outputs, and any resource referring to the bus by Ref, get garbage).
events_models.EventBus.physical_resource_id = property(lambda self: self.name)
events_models.Archive.physical_resource_id = property(lambda self: self.name)


# Last, per request: moto's server finds the backend for a request by listing its service modules
# on disk (twice per request: the loopback host first, then the service named in the signature),
# and writes an access-log line nobody reads (the launcher's output goes nowhere). The mapping
# from host to backend never changes, so it is looked up once per host; the log line is skipped.
from moto.moto_server import werkzeug_app  # noqa: E402
from werkzeug import serving  # noqa: E402

_backend_for_host = werkzeug_app.DomainDispatcherApplication.get_backend_for_host


def get_backend_for_host(self, host):
    cache = self.__dict__.setdefault("_outbox_backend_for_host", {})
    if host not in cache:
        cache[host] = _backend_for_host(self, host)
    return cache[host]


werkzeug_app.DomainDispatcherApplication.get_backend_for_host = get_backend_for_host
serving.WSGIRequestHandler.log_request = lambda self, *args, **kwargs: None

# And a rule target without an input transformer. AWS hands it the matched event whole;
# moto instead filled its own default template, evaluating eight JSONPath expressions per
# delivered event (what once made the product's setup carry a pass-through transformer only to
# keep the emulator quick — a configuration real AWS documents no use for). Here such a target
# gets the event as a transformer of `<aws.events.event.json>` would give it: the same body.
from moto.events import utils as events_utils  # noqa: E402

_template_parse = events_utils.EventTemplateParser.parse


def template_parse(input_template, input_paths_map, event):
    if not input_template and not input_paths_map:
        return json.loads(events_utils.EventTemplateParser._stringify(event))
    return _template_parse(input_template, input_paths_map, event)


events_utils.EventTemplateParser.parse = staticmethod(template_parse)


# Kinesis' record size (AWS's rule, which this moto lacks): a stream takes records up to its
# `MaxRecordSizeInKiB` (1024 unless raised by UpdateMaxRecordSize, up to 10240), and a
# PutRecords call up to 5 MiB (10 MiB on a stream whose records may exceed 1 MiB). moto knows
# neither the call nor the field and refuses every record above 1 MiB; here the stream keeps its
# size, DescribeStreamSummary shows it, and PutRecord(s) refuse by it as Kinesis does.
from moto.kinesis import exceptions as kinesis_errors  # noqa: E402
from moto.kinesis import responses as kinesis_responses  # noqa: E402
from moto.core.common_types import TYPE_RESPONSE  # noqa: E402,F401


def _record_kib(stream):
    return getattr(stream, "max_record_size_in_kib", 1024)


_to_json_summary = kinesis.Stream.to_json_summary


def to_json_summary(self):
    out = _to_json_summary(self)
    out["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] = _record_kib(self)
    return out


kinesis.Stream.to_json_summary = to_json_summary


def update_max_record_size(self):
    kib = self._get_param("MaxRecordSizeInKiB")
    if not isinstance(kib, int) or not 1024 <= kib <= 10240:
        raise kinesis_errors.ValidationException(
            value=str(kib), position="maxRecordSizeInKiB", regex_to_match="1024..10240"
        )
    stream = self.kinesis_backend.describe_stream(
        stream_arn=self._get_param("StreamARN"), stream_name=self._get_param("StreamName")
    )
    stream.max_record_size_in_kib = kib
    return kinesis_responses.EmptyResult()


kinesis_responses.KinesisResponse.update_max_record_size = update_max_record_size


class _RecordTooLarge(kinesis_errors.JsonRESTError):
    def __init__(self, position, limit):
        super().__init__(
            error_type="ValidationException",
            message=f"1 validation error detected: Value at 'records.{position}.member.data' failed to "
            f"satisfy constraint: Member must have length less than or equal to {limit}",
        )


class _RequestTooLarge(kinesis_errors.JsonRESTError):
    def __init__(self, limit):
        super().__init__(
            error_type="InvalidArgumentException",
            message=f"Records size exceeds {limit // (1024 * 1024)} MB limit",
        )


def _check_sizes(stream, records):
    limit = _record_kib(stream) * 1024
    sizes = [len(kinesis.b64decode(r.get("Data", ""))) + len(r.get("PartitionKey", "").encode()) for r in records]
    request = 10 * 1024 * 1024 if limit > 1024 * 1024 else 5 * 1024 * 1024
    if sum(sizes) > request:
        raise _RequestTooLarge(request)
    for position, size in enumerate(sizes, start=1):
        if size > limit:
            raise _RecordTooLarge(position, limit)


def put_records(self, stream_arn, stream_name, records):
    stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
    if len(records) > 500:
        raise kinesis_errors.TooManyRecords
    _check_sizes(stream, records)
    response = {"FailedRecordCount": 0, "Records": []}
    for record in records:
        sequence_number, shard_id = stream.put_record(
            record.get("PartitionKey"), record.get("ExplicitHashKey"), record.get("Data")
        )
        response["Records"].append({"SequenceNumber": sequence_number, "ShardId": shard_id})
    return response


kinesis.KinesisBackend.put_records = put_records

_put_record = kinesis.KinesisBackend.put_record


def backend_put_record(self, stream_arn, stream_name, partition_key, explicit_hash_key, data):
    stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
    _check_sizes(stream, [{"Data": data, "PartitionKey": partition_key}])
    return _put_record(self, stream_arn, stream_name, partition_key, explicit_hash_key, data)


kinesis.KinesisBackend.put_record = backend_put_record


from moto.server import main  # noqa: E402

main(sys.argv[1:])

