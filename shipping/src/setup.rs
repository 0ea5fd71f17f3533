//! `shipping setup`: the service's queue with its DLQ and redrive policy, the EventBridge rule
//! that feeds the queue, and the DynamoDB tables (outbox with a stream; TTL on inbox and outbox).

use aws_sdk_eventbridge::types::{DeadLetterConfig, RetryPolicy, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use eventing::provision::{ensure_bus, ensure_queue, ensure_table, ensure_ttl, SetupError};

use crate::{domain, Tables};

#[derive(Clone, Debug)]
pub struct SetupConfig {
    pub queue: String,
    pub dead_letter_queue: String,
    pub outbox_dead_letter_queue: String,
    pub max_receive_count: u32,
    pub visibility_timeout_seconds: u32,
    pub event_bus: String,
    pub monolith_source: String,
    pub tables: Tables,
}

/// The attribute DynamoDB's TTL reads on inbox and outbox items (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// How long, and how many times, EventBridge retries delivering an event to the queue before it
/// goes to the dead-letter queue (EventBridge's maximums, which are also its defaults).
pub const TARGET_MAX_EVENT_AGE_SECS: i32 = 86_400;
pub const TARGET_MAX_RETRIES: i32 = 185;

/// A queue policy letting the rule `rule_arn`, and only it, send to the queue `queue_arn`.
fn rule_may_send(queue_arn: &str, rule_arn: &str) -> serde_json::Value {
    json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "eventbridge-rule", "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
        "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}}]})
}

/// The rule that feeds the queue with the monolith's events.
pub fn rule_name(queue: &str, monolith_source: &str) -> String {
    format!("{queue}-from-{}", monolith_source.replace('.', "-"))
}

pub async fn run(aws: &aws_config::SdkConfig, cfg: &SetupConfig) -> Result<(), SetupError> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let events = aws_sdk_eventbridge::Client::new(aws);
    let dynamo = aws_sdk_dynamodb::Client::new(aws);

    let dlq_url = ensure_queue(&sqs, &cfg.dead_letter_queue).await?;
    let dlq_arn = queue_arn(&sqs, &cfg.dead_letter_queue, &dlq_url).await?;
    println!("dead-letter queue {}: ready", cfg.dead_letter_queue);
    ensure_queue(&sqs, &cfg.outbox_dead_letter_queue).await?;
    println!("outbox dead-letter queue {}: ready", cfg.outbox_dead_letter_queue);

    let queue_url = ensure_queue(&sqs, &cfg.queue).await?;
    let arn = queue_arn(&sqs, &cfg.queue, &queue_url).await?;
    created(
        ensure_bus(&events, &cfg.event_bus).await?,
        "event bus",
        &cfg.event_bus,
    );
    let rule = rule_name(&cfg.queue, &cfg.monolith_source);
    let rule_arn = events
        .put_rule()
        .name(&rule)
        .event_bus_name(&cfg.event_bus)
        .description("Monolith events the shipping service projects")
        .event_pattern(
            json!({"source": [cfg.monolith_source], "detail-type": domain::subscribed_event_types()})
                .to_string(),
        )
        .send()
        .await
        .map_err(|e| failed("eventbridge rule", &rule, e))?
        .rule_arn
        .unwrap_or_default();
    // Redrive to the DLQ; a policy letting this rule (and only it) send, which real SQS needs.
    let policy = rule_may_send(&arn, &rule_arn);
    sqs.set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": cfg.max_receive_count}).to_string(),
        )
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            cfg.visibility_timeout_seconds.to_string(),
        )
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| failed("sqs queue attributes", &cfg.queue, e))?;
    // What EventBridge cannot deliver to the queue (deleted, its policy or key refusing) it keeps
    // trying for a day, then drops — unless the target has a dead-letter queue. The service's
    // own DLQ: the body is the event the queue would have had, so `shipping dlq redrive` sends
    // it where it belongs once the queue is back; the rule needs leave to send there too.
    sqs.set_queue_attributes()
        .queue_url(&dlq_url)
        .attributes(
            QueueAttributeName::Policy,
            rule_may_send(&dlq_arn, &rule_arn).to_string(),
        )
        .send()
        .await
        .map_err(|e| failed("sqs queue attributes", &cfg.dead_letter_queue, e))?;
    let target = Target::builder()
        .id("shipping-queue")
        .arn(&arn)
        .dead_letter_config(DeadLetterConfig::builder().arn(&dlq_arn).build())
        // EventBridge's own defaults, stated so a change of theirs cannot shorten them unseen.
        .retry_policy(
            RetryPolicy::builder()
                .maximum_event_age_in_seconds(TARGET_MAX_EVENT_AGE_SECS)
                .maximum_retry_attempts(TARGET_MAX_RETRIES)
                .build(),
        )
        .build()
        .map_err(|e| invalid("eventbridge target", &rule, e))?;
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(&cfg.event_bus)
        .targets(target)
        .send()
        .await
        .map_err(|e| failed("eventbridge target", &rule, e))?;
    println!(
        "queue {} (redrive to {} after {} receives), rule {rule} on {}: ready",
        cfg.queue, cfg.dead_letter_queue, cfg.max_receive_count, cfg.event_bus
    );

    let t = &cfg.tables;
    use aws_sdk_dynamodb::types::StreamViewType;
    for (table, key, stream) in [
        (&t.customers, "customer_id", None),
        (&t.shipments, "order_id", None),
        (&t.inbox, "event_id", None),
        (&t.outbox, "event_id", Some(StreamViewType::NewImage)),
        (&t.checkpoints, "shard_id", None),
    ] {
        created(
            ensure_table(&dynamo, table, key, stream).await?,
            "dynamodb table",
            table,
        );
    }
    ensure_ttl(&dynamo, &t.inbox, TTL_ATTRIBUTE).await?;
    ensure_ttl(&dynamo, &t.outbox, TTL_ATTRIBUTE).await?;
    println!("ttl on {} and {}: {TTL_ATTRIBUTE}", t.inbox, t.outbox);
    Ok(())
}

fn created(created: bool, kind: &str, name: &str) {
    println!("{kind} {name}: {}", if created { "created" } else { "exists" });
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, name: &str, url: &str) -> Result<String, SetupError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| failed("sqs queue", name, e))?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default())
}

fn failed<E>(kind: &'static str, name: &str, err: E) -> SetupError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    SetupError::Create {
        kind,
        name: name.into(),
        code: err.code().unwrap_or("unknown").to_owned(),
        source: Box::new(err),
    }
}

fn invalid(kind: &'static str, name: &str, err: aws_sdk_eventbridge::error::BuildError) -> SetupError {
    SetupError::Create {
        kind,
        name: name.into(),
        code: "InvalidRequest".into(),
        source: Box::new(err),
    }
}
