//! Deleting handled messages in batches, and watching the dead-letter queue's depth.

use super::*;

/// How long a delete waits for others to share its DeleteMessageBatch.
pub(super) const DELETE_LINGER: Duration = Duration::from_millis(50);

/// How often the dead-letter queue's depth is read for `/metrics`.
pub(super) const DEAD_LETTER_POLL: Duration = Duration::from_secs(10);

/// Keeps `shipping_dead_letter_queue_messages` at the dead-letter queue's depth. Events land
/// there from two places — this consumer's poison messages, and EventBridge when the rule
/// cannot deliver to the queue — and only the queue itself counts the second: a counter in
/// this process never sees them. Parked messages being read (`dlq list`) count as well.
pub(super) async fn watch_dead_letters(ctx: Arc<Context>, dlq: String, stop: CancellationToken) {
    let names = [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ];
    loop {
        let read = ctx
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await;
        match read {
            Ok(out) => {
                let depth: i64 = names
                    .iter()
                    .filter_map(|n| out.attributes().and_then(|a| a.get(n)))
                    .filter_map(|v| v.parse::<i64>().ok())
                    .sum();
                ctx.metrics.dead_letter_queue_messages.set(depth);
            }
            // The gauge keeps its last value; the next read tries again.
            Err(err) => tracing::debug!(error = %err, "reading the dead-letter queue's depth failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(DEAD_LETTER_POLL) => {}
        }
    }
}

/// Deletes applied messages, up to ten per DeleteMessageBatch and up to `at_once` calls at a
/// time, until every sender is gone. One call at a time held every applied message's slot behind
/// it once the channel filled: the consumer was capped near ten messages per round trip.
pub(super) async fn delete_batches(
    ctx: Arc<Context>,
    mut receipts: tokio::sync::mpsc::Receiver<String>,
    at_once: usize,
) {
    let mut calls = JoinSet::new();
    let mut batch: Vec<String> = Vec::with_capacity(10);
    while receipts.recv_many(&mut batch, 10).await > 0 {
        // A short wait fills the batch when messages finish one by one (a slow store): the
        // messages stay invisible meanwhile, and one call instead of ten is what SQS bills.
        let deadline = tokio::time::Instant::now() + DELETE_LINGER;
        while batch.len() < 10 {
            let room = 10 - batch.len();
            match tokio::time::timeout_at(deadline, receipts.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        while calls.try_join_next().is_some() {}
        if calls.len() >= at_once.max(1) {
            calls.join_next().await;
        }
        let ctx = ctx.clone();
        let full = std::mem::replace(&mut batch, Vec::with_capacity(10));
        calls.spawn(async move { delete_batch(&ctx, &full).await });
    }
    while calls.join_next().await.is_some() {}
}

pub(super) async fn delete_batch(ctx: &Context, receipts: &[String]) {
    if let [one] = receipts {
        return delete(ctx, &ctx.queue_url, one).await;
    }
    let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(r)
                .build()
                .ok()
        })
        .collect();
    let mut backoff = Backoff::delete();
    loop {
        match ctx
            .sqs
            .delete_message_batch()
            .queue_url(&ctx.queue_url)
            .set_entries(Some(entries.clone()))
            .send()
            .await
        {
            Ok(out) => {
                // An entry that failed alone gets its own attempts.
                for failed in out.failed() {
                    if let Some(r) = failed.id().parse::<usize>().ok().and_then(|i| receipts.get(i)) {
                        delete(ctx, &ctx.queue_url, r).await;
                    }
                }
                return;
            }
            Err(err) if transient_cause(&err).is_some() && backoff.attempts() < 5 => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, messages = receipts.len(), "cannot delete applied messages; their redelivery will be a no-op");
                return;
            }
        }
    }
}

pub(super) async fn delete(ctx: &Context, queue_url: &str, receipt: &str) {
    let mut backoff = Backoff::delete();
    loop {
        match ctx
            .sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => return,
            Err(err) if transient_cause(&err).is_some() && backoff.attempts() < 5 => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            // Redelivered later, then absorbed by the inbox as a duplicate.
            Err(err) => {
                tracing::warn!(error = %err, "cannot delete an applied message; its redelivery will be a no-op");
                return;
            }
        }
    }
}
