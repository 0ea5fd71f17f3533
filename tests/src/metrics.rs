//! Reading a process's Prometheus `/metrics`.
//!
//! A metric the process does not declare is an error, never 0: an assertion such as
//! `dead letters == 0` must fail when the metric is renamed, not pass. A declared metric with no
//! sample yet (a labelled family nobody incremented) is 0.

/// The value of the metric `name` (with its labels, if given: `name{outcome="duplicate"}`)
/// served on `127.0.0.1:port`.
pub async fn scrape(port: u16, name: &str) -> anyhow::Result<f64> {
    value_in(&fetch(port).await?, name)
}

/// The value of `name` (labels included, if given) in a `/metrics` text.
pub fn value_in(text: &str, name: &str) -> anyhow::Result<f64> {
    let family = name.split('{').next().unwrap_or(name);
    ensure_declared(text, family)?;
    Ok(text
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ')))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0))
}

/// The sum of metric `name` over all its label sets, from a `/metrics` text.
pub fn sum_in(text: &str, name: &str) -> anyhow::Result<f64> {
    ensure_declared(text, name)?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// [`sum_in`] of what `127.0.0.1:port` serves.
pub async fn scrape_sum(port: u16, name: &str) -> anyhow::Result<f64> {
    sum_in(&fetch(port).await?, name)
}

/// `/healthz` of `127.0.0.1:port`: its status code and body.
pub async fn health(port: u16) -> anyhow::Result<(u16, String)> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// Waits until `/healthz` answers `status` with a body containing `needle`; returns the body.
pub async fn wait_health(
    port: u16,
    status: u16,
    needle: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<String> {
    crate::wait::until(&format!("/healthz {status} with `{needle}`"), timeout, || async {
        let (code, body) = health(port).await.unwrap_or((0, String::new()));
        Ok((code == status && body.contains(needle)).then_some(body))
    })
    .await
}

async fn fetch(port: u16) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// Fails unless the text declares `name` (a `# TYPE` line; a counter `x` serves `x_total`, a
/// histogram `x` serves `x_bucket`, `x_sum` and `x_count`).
fn ensure_declared(text: &str, name: &str) -> anyhow::Result<()> {
    let declared = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .any(|family| {
            name == family
                || name.strip_prefix(family).is_some_and(|suffix| {
                    ["_total", "_bucket", "_sum", "_count", "_created"].contains(&suffix)
                })
        });
    anyhow::ensure!(declared, "the process serves no metric `{name}`");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_events Events.\n# TYPE a_events counter\na_events_total 3\n\
                        # TYPE b_applied counter\nb_applied_total{outcome=\"applied\"} 2\n\
                        b_applied_total{outcome=\"duplicate\"} 1\n# TYPE c_lag gauge\n";

    #[test]
    fn an_absent_metric_is_an_error_not_zero() {
        assert!(value_in(TEXT, "a_events_renamed_total").is_err());
        assert!(sum_in(TEXT, "nothing_total").is_err());
        assert!(value_in(TEXT, "nothing{outcome=\"x\"}").is_err());
    }

    #[test]
    fn declared_metrics_read_their_samples_or_zero() {
        assert_eq!(value_in(TEXT, "a_events_total").unwrap(), 3.0);
        assert_eq!(sum_in(TEXT, "b_applied_total").unwrap(), 3.0);
        assert_eq!(
            value_in(TEXT, "b_applied_total{outcome=\"duplicate\"}").unwrap(),
            1.0
        );
        assert_eq!(value_in(TEXT, "b_applied_total{outcome=\"stale\"}").unwrap(), 0.0);
        assert_eq!(value_in(TEXT, "c_lag").unwrap(), 0.0);
    }
}
