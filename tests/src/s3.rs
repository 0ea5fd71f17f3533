//! S3 as the tests read it: the object a claim check (`{bucket, key, …}`) points to.

use serde_json::Value;

pub async fn claimed_object(sdk: &aws_config::SdkConfig, claim: &Value) -> anyhow::Result<Vec<u8>> {
    let (Some(bucket), Some(key)) = (claim["bucket"].as_str(), claim["key"].as_str()) else {
        anyhow::bail!("not a claim check: {claim}");
    };
    let object = client(sdk).get_object().bucket(bucket).key(key).send().await?;
    Ok(object.body.collect().await?.into_bytes().to_vec())
}

/// The harness's S3 client: path-style, as the product's (`eventing::claim_check::s3_client`),
/// so the tests reach the emulator under a host name too.
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
