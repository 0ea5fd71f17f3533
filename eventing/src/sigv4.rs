//! SigV4 for the one request shape [`crate::aws_json`] sends: an awsJson 1.1 `POST` with a
//! content type and an `X-Amz-Target`, signed in headers.
//!
//! Why not `aws-sigv4` on this path: it canonicalises any request (any method, query, header
//! set, presigning, S3's rules) through header maps, formatted strings and a dozen allocations,
//! several times the cost of hashing the body, which is the only costly step SigV4 needs here
//! (the profile is in the commit that made this module). This module writes the few
//! fixed strings of the specification directly. `aws-sigv4` stays as its oracle: the tests sign
//! the same requests with both and compare the `Authorization` header, and an end-to-end test
//! has botocore verify the signatures the relay sends.

use std::fmt::Write as _;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use chrono::{DateTime, Datelike, Timelike, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Where and as what a client signs: fixed for its life.
#[derive(Clone, Debug)]
pub struct Scope {
    pub region: String,
    /// The service's signing name (`events`, `kinesis`).
    pub service: &'static str,
    /// The `Host` header's value, signed and sent as it is.
    pub host: String,
    /// The request path as sent, written as SigV4 canonicalises it.
    canonical_path: String,
}

impl Scope {
    /// A scope for requests to `uri` (its host, its port unless the scheme's default, its path).
    pub fn new(region: &str, service: &'static str, uri: &http::Uri) -> Option<Self> {
        let host = uri.host()?;
        let default_port = matches!(
            (uri.scheme_str(), uri.port_u16()),
            (Some("http"), Some(80)) | (Some("https"), Some(443))
        );
        let host = match uri.port_u16() {
            Some(port) if !default_port => format!("{host}:{port}"),
            _ => host.to_owned(),
        };
        // The path is sent already percent-encoded; SigV4 (outside S3) encodes it once more,
        // which touches only its `%`s.
        let canonical_path = uri.path().replace('%', "%25");
        Some(Self {
            region: region.to_owned(),
            service,
            host,
            canonical_path,
        })
    }
}

/// The headers a signed request carries beyond its own.
#[derive(Debug)]
pub struct Signature {
    pub amz_date: String,
    pub authorization: String,
}

/// Signs `POST` of `body` with `Content-Type: application/x-amz-json-1.1`, `Host`,
/// `X-Amz-Date`, `X-Amz-Security-Token` (with a session token) and `X-Amz-Target: target`.
pub fn sign(
    scope: &Scope,
    credentials: &Credentials,
    target: &str,
    body: &[u8],
    now: SystemTime,
) -> Signature {
    let now: DateTime<Utc> = now.into();
    let date = format!("{:04}{:02}{:02}", now.year(), now.month(), now.day());
    let amz_date = format!("{date}T{:02}{:02}{:02}Z", now.hour(), now.minute(), now.second());
    let token = credentials.session_token().map(trim_all);
    let signed_headers = if token.is_some() {
        "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
    } else {
        "content-type;host;x-amz-date;x-amz-target"
    };

    let mut canonical = String::with_capacity(512 + token.as_deref().map_or(0, str::len));
    canonical.push_str("POST\n");
    canonical.push_str(&scope.canonical_path);
    // No query string.
    canonical.push_str("\n\n");
    canonical.push_str("content-type:");
    canonical.push_str(CONTENT_TYPE);
    canonical.push_str("\nhost:");
    canonical.push_str(&trim_all(&scope.host));
    canonical.push_str("\nx-amz-date:");
    canonical.push_str(&amz_date);
    if let Some(token) = &token {
        canonical.push_str("\nx-amz-security-token:");
        canonical.push_str(token);
    }
    canonical.push_str("\nx-amz-target:");
    canonical.push_str(&trim_all(target));
    canonical.push_str("\n\n");
    canonical.push_str(signed_headers);
    canonical.push('\n');
    canonical.push_str(&hex::encode(Sha256::digest(body)));

    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let mut string_to_sign = String::with_capacity(160);
    string_to_sign.push_str("AWS4-HMAC-SHA256\n");
    string_to_sign.push_str(&amz_date);
    string_to_sign.push('\n');
    string_to_sign.push_str(&credential_scope);
    string_to_sign.push('\n');
    string_to_sign.push_str(&hex::encode(Sha256::digest(canonical.as_bytes())));

    let secret = format!("AWS4{}", credentials.secret_access_key());
    let key = hmac(secret.as_bytes(), date.as_bytes());
    let key = hmac(&key, scope.region.as_bytes());
    let key = hmac(&key, scope.service.as_bytes());
    let key = hmac(&key, b"aws4_request");
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));

    let mut authorization = String::with_capacity(200);
    let _ = write!(
        authorization,
        "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id()
    );
    Signature {
        amz_date,
        authorization,
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC keys have no length limit"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A header value as SigV4 signs it: trimmed, runs of spaces made one.
fn trim_all(value: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = value.trim();
    if !trimmed.contains("  ") {
        return std::borrow::Cow::Borrowed(trimmed);
    }
    let mut out = String::with_capacity(trimmed.len());
    for c in trimmed.chars() {
        if c != ' ' || !out.ends_with(' ') {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
    use aws_smithy_runtime_api::client::identity::Identity;
    use std::time::{Duration, UNIX_EPOCH};

    /// The `Authorization` and `X-Amz-Date` aws-sigv4 writes for the same request.
    fn oracle(
        uri: &str,
        region: &str,
        service: &str,
        credentials: &Credentials,
        target: &str,
        body: &[u8],
        now: SystemTime,
    ) -> (String, String) {
        let identity: Identity = credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", target)];
        let request =
            SignableRequest::new("POST", uri, headers.iter().copied(), SignableBody::Bytes(body)).unwrap();
        let (instructions, _) = aws_sigv4::http_request::sign(request, &params)
            .unwrap()
            .into_parts();
        let header = |name: &str| {
            instructions
                .headers()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_owned())
                .unwrap()
        };
        (header("authorization"), header("x-amz-date"))
    }

    #[test]
    fn signatures_match_aws_sigv4_for_every_endpoint_and_credential_shape() {
        let plain = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let session = Credentials::new(
            "ASIAEXAMPLE",
            "secret/with+chars",
            Some("IQoJb3JpZ2luX2VjE//token==".into()),
            None,
            "test",
        );
        let endpoints = [
            "https://events.eu-west-1.amazonaws.com",
            "https://kinesis.us-east-1.amazonaws.com:443",
            "http://127.0.0.1:4566",
            "http://localhost:80/",
            "https://vpce-1.events.us-east-1.vpce.amazonaws.com/prefix/a%20b",
        ];
        let bodies: [&[u8]; 3] = [b"", br#"{"Entries":[{"Detail":"{\"a\":1}"}]}"#, &[b'x'; 70_000]];
        let times = [
            UNIX_EPOCH + Duration::from_secs(1_732_000_000),
            UNIX_EPOCH + Duration::from_secs(946_684_799),
        ];
        let mut checked = 0;
        for endpoint in endpoints {
            let uri: http::Uri = endpoint.parse().unwrap();
            for (region, service, target) in [
                ("eu-west-1", "events", "AWSEvents.PutEvents"),
                ("us-gov-west-1", "kinesis", "Kinesis_20131202.GetRecords"),
            ] {
                let scope = Scope::new(region, service, &uri).unwrap();
                for credentials in [&plain, &session] {
                    for body in bodies {
                        for now in times {
                            let ours = sign(&scope, credentials, target, body, now);
                            let (authorization, amz_date) =
                                oracle(endpoint, region, service, credentials, target, body, now);
                            assert_eq!(
                                ours.authorization,
                                authorization,
                                "{endpoint} {region} {}",
                                credentials.access_key_id()
                            );
                            assert_eq!(ours.amz_date, amz_date);
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 5 * 2 * 2 * 3 * 2);
    }

    #[test]
    fn header_values_are_signed_trimmed_as_the_specification_says() {
        // aws-sigv4 signs a session token as given; SigV4 (and botocore, and the service reading
        // the header) trims it and makes runs of spaces one. Real tokens have no spaces.
        let uri: http::Uri = "https://events.eu-west-1.amazonaws.com".parse().unwrap();
        let scope = Scope::new("eu-west-1", "events", &uri).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_732_000_000);
        let token = |t: &str| Credentials::new("ASIA", "s", Some(t.into()), None, "test");
        assert_eq!(
            sign(
                &scope,
                &token("  a  token  "),
                " AWSEvents.PutEvents ",
                b"{}",
                now
            )
            .authorization,
            sign(&scope, &token("a token"), "AWSEvents.PutEvents", b"{}", now).authorization
        );
        assert_eq!(trim_all("  a   b c "), "a b c");
    }

    #[test]
    fn the_host_is_signed_as_sent() {
        let scope = |uri: &str| Scope::new("r", "s", &uri.parse().unwrap()).unwrap();
        assert_eq!(scope("https://a.example:443").host, "a.example");
        assert_eq!(scope("https://a.example:8443").host, "a.example:8443");
        assert_eq!(scope("http://127.0.0.1:4566").host, "127.0.0.1:4566");
        assert_eq!(scope("http://a.example:80/x").canonical_path, "/x");
        assert_eq!(scope("http://a.example/a%20b").canonical_path, "/a%2520b");
        assert!(Scope::new("r", "s", &"/relative".parse().unwrap()).is_none());
    }
}
