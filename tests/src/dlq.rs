//! Reading what a dead-letter queue holds, as the tests check it.

use std::time::Duration;

use serde_json::Value;

/// Receives messages from `queue` until `at_least` arrived or 120 s passed; their bodies as JSON.
pub async fn receive(
    sdk: &aws_config::SdkConfig,
    queue: &str,
    at_least: usize,
) -> anyhow::Result<Vec<Value>> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let url = queue_url(&sqs, queue).await?;
    let mut parked: Vec<Value> = Vec::new();
    let started = std::time::Instant::now();
    while parked.len() < at_least && started.elapsed() < Duration::from_secs(120) {
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await?;
        for m in out.messages() {
            parked.push(serde_json::from_str(m.body().unwrap_or("null"))?);
        }
    }
    Ok(parked)
}

/// The URL of the existing queue `name`.
pub async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> anyhow::Result<String> {
    Ok(sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_owned())
}
