# Starts moto's server with one emulator bug fixed: moto's Kinesis Shard.put_record is "not safe
# for concurrency" (its own comment) — two PutRecords handled at once by its threaded server can
# draw the same sequence number, and the second record silently replaces the first. Real Kinesis
# never drops an accepted record, so the tests run against an emulator that does not either.
# The fix also makes put_record O(1): moto recomputed the last sequence number by listing every
# key, which is why its streams slowed down as they grew.
import sys
import threading

from moto.kinesis import models as kinesis

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

# The restored copies also carry a *copy* of the table's stream shard, while every open stream
# iterator still points at the original: readers would never see another record. Keep the original
# shard, trimmed of what the cancelled transaction appended.
_transact = dynamodb.DynamoDBBackend.transact_write_items


def transact_write_items(self, transact_items):
    with _dynamodb_lock:
        shards = {
            name: (table.stream_shard, len(table.stream_shard.items))
            for name, table in self.tables.items()
            if getattr(table, "stream_shard", None) is not None
        }
        try:
            return _transact(self, transact_items)
        except Exception:
            for name, (shard, length) in shards.items():
                table = self.tables.get(name)
                if table is not None and table.stream_shard is not shard:
                    del shard.items[length:]
                    shard.table = table
                    table.stream_shard = shard
            raise


dynamodb.DynamoDBBackend.transact_write_items = transact_write_items

from moto.server import main  # noqa: E402

main(sys.argv[1:])
