//! Shard leases and checkpoints in one DynamoDB table (key `lease_key`).
//!
//! A shard's item holds its owner, when the lease expires, and the last sequence number whose
//! events EventBridge accepted (`SHARD_END` once a closed shard is drained). Every write a
//! worker makes is conditional on still owning the lease, so a relay whose lease was taken over
//! can never move a checkpoint. Workers announce themselves with items of their own, so each
//! relay knows how many share the stream and takes its fair share of shards.
//!
//! A lease is held by a worker id *and* a token drawn when the process starts (`lease_instance`):
//! two processes started with the same `--worker-id` by mistake are two holders, not one, so they
//! can never both own a shard (each would otherwise pass the other's `owner = me` condition and
//! publish the shard twice, each moving the checkpoint). The price: a relay restarted under the
//! same id after a crash waits for its old leases to expire, as any other relay would.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

pub const SHARD_END: &str = "SHARD_END";

/// The TTL attribute of worker heartbeat items (epoch seconds); shard leases never carry it.
pub const WORKER_TTL_ATTRIBUTE: &str = "expires_at";
/// How long a worker item outlives its last heartbeat before DynamoDB's TTL removes it.
const WORKER_ITEM_TTL_SECS: i64 = 24 * 3600;
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("checkpoint table `{table}` does not exist; run `bridge setup` first")]
    TableMissing { table: String },
    #[error("dynamodb call on the checkpoint table failed ({code})")]
    Dynamo {
        code: String,
        retryable: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl LeaseError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Dynamo { retryable: true, .. })
    }
}

impl eventing::retry::Transient for LeaseError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }
}

/// One shard's row.
#[derive(Debug, Clone, Default)]
pub struct ShardLease {
    pub shard_id: String,
    pub owner: Option<String>,
    pub expires_at_ms: i64,
    pub checkpoint: Option<String>,
    /// Held by this very process (its worker id and its start-up token).
    pub mine: bool,
}

impl ShardLease {
    pub fn is_finished(&self) -> bool {
        self.checkpoint.as_deref() == Some(SHARD_END)
    }
}

#[derive(Clone)]
pub struct LeaseTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
    stream: String,
    pub worker_id: String,
    /// This process's token, drawn at start: see the module's comment.
    instance: String,
}

/// What a conditional write learnt.
pub enum Outcome<T> {
    Done(T),
    /// The condition failed: someone else owns the lease now.
    Lost,
}

impl LeaseTable {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str, stream: &str, worker_id: &str) -> Self {
        Self {
            client,
            table: table.into(),
            stream: stream.into(),
            worker_id: worker_id.into(),
            instance: format!("{:016x}", rand::random::<u64>()),
        }
    }

    fn shard_key(&self, shard_id: &str) -> AttributeValue {
        AttributeValue::S(format!("shard#{}#{shard_id}", self.stream))
    }

    /// Every shard row and the number of live workers (this one included).
    pub async fn snapshot(&self, now_ms: i64) -> Result<(HashMap<String, ShardLease>, usize), LeaseError> {
        let mut shards = HashMap::new();
        let mut workers = 1;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression("lease_stream = :s")
                .expression_attribute_values(":s", AttributeValue::S(self.stream.clone()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.error(e))?;
            for item in out.items() {
                let kind = str_attr(item, "lease_kind").unwrap_or_default();
                let expires = num_attr(item, "lease_expires_at").unwrap_or(0);
                if kind == "worker" {
                    if expires > now_ms && str_attr(item, "lease_worker").as_deref() != Some(&self.worker_id)
                    {
                        workers += 1;
                    }
                    continue;
                }
                let owner = str_attr(item, "lease_owner");
                let mine = owner.as_deref() == Some(&self.worker_id)
                    && str_attr(item, "lease_instance").as_deref() == Some(&self.instance);
                let lease = ShardLease {
                    shard_id: str_attr(item, "lease_shard_id").unwrap_or_default(),
                    owner,
                    expires_at_ms: expires,
                    checkpoint: str_attr(item, "lease_checkpoint"),
                    mine,
                };
                shards.insert(lease.shard_id.clone(), lease);
            }
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok((shards, workers)),
            }
        }
    }

    fn worker_key(&self) -> AttributeValue {
        AttributeValue::S(format!("worker#{}#{}", self.stream, self.worker_id))
    }

    /// Says this worker is alive until `expires_ms`. The item also carries `expires_at`, a day
    /// on, for DynamoDB's TTL (`bridge setup` turns it on): a relay that died, or a worker id
    /// used once, does not leave its item behind for good.
    pub async fn heartbeat(&self, expires_ms: i64) -> Result<(), LeaseError> {
        let forget_at = expires_ms / 1000 + WORKER_ITEM_TTL_SECS;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("lease_key", self.worker_key())
            .item("lease_kind", AttributeValue::S("worker".into()))
            .item("lease_stream", AttributeValue::S(self.stream.clone()))
            .item("lease_worker", AttributeValue::S(self.worker_id.clone()))
            .item("lease_expires_at", AttributeValue::N(expires_ms.to_string()))
            .item(WORKER_TTL_ATTRIBUTE, AttributeValue::N(forget_at.to_string()))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Removes this worker's heartbeat item at a clean stop: it no longer counts as a relay.
    pub async fn retire(&self) -> Result<(), LeaseError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("lease_key", self.worker_key())
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Takes the shard's lease if it is free, expired, held by this process, or by `steal_from`
    /// (another worker id).
    /// Returns the checkpoint to resume from.
    pub async fn acquire(
        &self,
        shard_id: &str,
        now_ms: i64,
        expires_ms: i64,
        steal_from: Option<&str>,
    ) -> Result<Outcome<Option<String>>, LeaseError> {
        let mut condition =
            "attribute_not_exists(lease_key) OR attribute_not_exists(#o) OR lease_expires_at < :now OR (#o = :me AND #i = :inst)".to_owned();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("lease_key", self.shard_key(shard_id))
            .update_expression("SET #o = :me, #i = :inst, lease_expires_at = :exp, lease_kind = :kind, lease_stream = :s, lease_shard_id = :id")
            .expression_attribute_names("#o", "lease_owner")
            .expression_attribute_names("#i", "lease_instance")
            .expression_attribute_values(":me", AttributeValue::S(self.worker_id.clone()))
            .expression_attribute_values(":inst", AttributeValue::S(self.instance.clone()))
            .expression_attribute_values(":exp", AttributeValue::N(expires_ms.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
            .expression_attribute_values(":kind", AttributeValue::S("shard".into()))
            .expression_attribute_values(":s", AttributeValue::S(self.stream.clone()))
            .expression_attribute_values(":id", AttributeValue::S(shard_id.into()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        if let Some(victim) = steal_from.filter(|v| *v != self.worker_id) {
            condition.push_str(" OR #o = :victim");
            req = req.expression_attribute_values(":victim", AttributeValue::S(victim.into()));
        }
        match req.condition_expression(condition).send().await {
            Ok(out) => Ok(Outcome::Done(
                out.attributes().and_then(|a| str_attr(a, "lease_checkpoint")),
            )),
            Err(e) if is_condition_failure(&e) => Ok(Outcome::Lost),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Extends our lease; `Lost` if another worker (or process) holds it now.
    pub async fn renew(&self, shard_id: &str, expires_ms: i64) -> Result<Outcome<()>, LeaseError> {
        self.owned_update(shard_id, "SET lease_expires_at = :exp", expires_ms, None)
            .await
    }

    /// Records that every event up to `sequence` was accepted (and renews the lease).
    pub async fn checkpoint(
        &self,
        shard_id: &str,
        sequence: &str,
        expires_ms: i64,
    ) -> Result<Outcome<()>, LeaseError> {
        self.owned_update(
            shard_id,
            "SET lease_expires_at = :exp, lease_checkpoint = :cp",
            expires_ms,
            Some(sequence),
        )
        .await
    }

    /// Gives the lease up at shutdown so another relay takes the shard over at once.
    pub async fn release(&self, shard_id: &str) -> Result<Outcome<()>, LeaseError> {
        self.owned_update(shard_id, "REMOVE #o, #i SET lease_expires_at = :exp", 0, None)
            .await
    }

    async fn owned_update(
        &self,
        shard_id: &str,
        expression: &str,
        expires_ms: i64,
        checkpoint: Option<&str>,
    ) -> Result<Outcome<()>, LeaseError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("lease_key", self.shard_key(shard_id))
            .update_expression(expression)
            .condition_expression("#o = :me AND #i = :inst")
            .expression_attribute_names("#o", "lease_owner")
            .expression_attribute_names("#i", "lease_instance")
            .expression_attribute_values(":me", AttributeValue::S(self.worker_id.clone()))
            .expression_attribute_values(":inst", AttributeValue::S(self.instance.clone()))
            .expression_attribute_values(":exp", AttributeValue::N(expires_ms.to_string()));
        if let Some(cp) = checkpoint {
            req = req.expression_attribute_values(":cp", AttributeValue::S(cp.into()));
        }
        match req.send().await {
            Ok(_) => Ok(Outcome::Done(())),
            Err(e) if is_condition_failure(&e) => Ok(Outcome::Lost),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error<E>(&self, err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> LeaseError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().unwrap_or("unknown").to_owned();
        if code == "ResourceNotFoundException" {
            return LeaseError::TableMissing {
                table: self.table.clone(),
            };
        }
        let retryable = eventing::retry::transient_cause(&err).is_some();
        LeaseError::Dynamo {
            code,
            retryable,
            source: Box::new(err),
        }
    }
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

fn str_attr(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn num_attr(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}
