//! The relay sends PutEvents and GetRecords without the AWS SDK's orchestrator
//! (`eventing::aws_json`; shipping's PutEvents too), signing each call with `aws-sigv4` itself.
//! The emulator takes any signature, so a signing mistake would pass every other test and fail
//! every call at AWS. Here each such call, as it arrived at a proxy, is signed again by botocore
//! (what the AWS CLI signs with) from the same credentials, session token included: the two
//! must agree.

use std::time::Duration;

use harness::bus;
use harness::faults::FaultProxy;
use harness::process::Proc;
use harness::sigv4::{self, Keys};
use harness::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_put_events_and_get_records_call_carries_the_signature_botocore_computes() -> anyhow::Result<()>
{
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "all").await?;
    let capture = stack.spawn_capture(&[]).await?;
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    // A session token as the ECS task role gives one: it must be sent and signed.
    let token = "IQoJb3JpZ2luX2VjEJ//////////wEaCXVzLWVhc3QtMSJH+token/with=odd+chars";
    let env = stack.env_with(&[
        ("AWS_ENDPOINT_URL_EVENTBRIDGE", &proxy.endpoint),
        ("AWS_ENDPOINT_URL_KINESIS", &proxy.endpoint),
        ("AWS_SESSION_TOKEN", token),
    ]);
    let relay = Proc::spawn("bridge", &["relay"], &env)?;

    let unicode = r#"{"name": "été 🚀", "note": "line\nbreak \"quoted\" \\ back"}"#;
    stack
        .insert_outbox(
            "00000000-0000-0000-0000-0000000051a1",
            ("Order", "o-1"),
            "OrderPlaced",
            unicode,
        )
        .await?;
    stack
        .insert_outbox(
            "00000000-0000-0000-0000-0000000051a2",
            ("Order", "o-2"),
            "OrderPlaced",
            "{}",
        )
        .await?;
    let ids = stack.outbox_ids().await?.into_iter().collect();
    events
        .until_all(&ids, Duration::from_secs(120), || {
            format!("relay:\n{}\ncapture:\n{}", relay.output(), capture.output())
        })
        .await?;

    let calls = proxy
        .plan
        .signed_calls
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    for target in ["AWSEvents.PutEvents", "Kinesis_20131202.GetRecords"] {
        anyhow::ensure!(
            calls.iter().any(|c| c.target == target),
            "no {target} call reached the proxy"
        );
    }
    let keys = Keys {
        access_key: "testing",
        secret_key: "testing",
        token: Some(token),
    };
    for call in &calls {
        let verdict = sigv4::check(call, &proxy.endpoint, &keys).await?;
        assert_eq!(verdict.algorithm, "AWS4-HMAC-SHA256");
        assert_eq!(
            verdict.expected, verdict.got,
            "botocore signs this call differently: {call:?}"
        );
        let service = if call.target.starts_with("AWSEvents.") {
            "events"
        } else {
            "kinesis"
        };
        assert_eq!(&verdict.scope[2..4], ["us-east-1", service], "{verdict:?}");
        for header in [
            "host",
            "x-amz-date",
            "x-amz-target",
            "content-type",
            "x-amz-security-token",
        ] {
            assert!(
                verdict.signed_headers.iter().any(|h| h == header),
                "{header} is not signed: {verdict:?}"
            );
        }
    }
    // The check can fail: one byte of the body changed, botocore's signature no longer matches.
    let mut tampered = calls[0].clone();
    let mut body = tampered.body.to_vec();
    body[0] = b' ';
    tampered.body = body.into();
    let verdict = sigv4::check(&tampered, &proxy.endpoint, &keys).await?;
    assert_ne!(
        verdict.expected, verdict.got,
        "a tampered body kept its signature"
    );
    Ok(())
}
