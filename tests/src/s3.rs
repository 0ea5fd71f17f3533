//! S3 as the tests read it: the object a claim check (`{bucket, key, …}`) points to.

use serde_json::Value;

pub async fn claimed_object(sdk: &aws_config::SdkConfig, claim: &Value) -> anyhow::Result<Vec<u8>> {
    let (Some(bucket), Some(key)) = (claim["bucket"].as_str(), claim["key"].as_str()) else {
        anyhow::bail!("not a claim check: {claim}");
    };
    let object = aws_sdk_s3::Client::new(sdk)
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await?;
    Ok(object.body.collect().await?.into_bytes().to_vec())
}
