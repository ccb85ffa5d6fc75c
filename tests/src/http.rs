//! Small HTTP clients for the dashboard, JSON API, metrics and control endpoints.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

/// A loopback TCP port that was free a moment ago (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET `url` and return the body (status 200 only), with a 10 s timeout and a 32 MiB cap.
pub fn http_get(url: &str) -> Result<String> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    resp.body_mut()
        .with_config()
        .limit(32 << 20)
        .read_to_string()
        .with_context(|| format!("reading {url}"))
}

/// POST to `url` with an empty body (status 200 only), with a 10 s timeout; the body.
pub fn http_post(url: &str) -> Result<String> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut resp = agent
        .post(url)
        .send_empty()
        .with_context(|| format!("POST {url}"))?;
    resp.body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .with_context(|| format!("reading {url}"))
}

/// GET `url` and parse the body as JSON.
pub fn http_json(url: &str) -> Result<Value> {
    Ok(serde_json::from_str(&http_get(url)?)?)
}

/// `hearth_deltas_total` from Prometheus text, as (outcome, reason) → count.
pub fn deltas_by_reason(metrics: &str) -> std::collections::BTreeMap<(String, String), u64> {
    let label = |line: &str, key: &str| -> Option<String> {
        let at = line.find(&format!("{key}=\""))? + key.len() + 2;
        let rest = line.get(at..)?;
        Some(rest.get(..rest.find('"')?)?.to_string())
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("hearth_deltas_total{"))
        .filter_map(|l| {
            let value = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some(((label(l, "outcome")?, label(l, "reason")?), value as u64))
        })
        .collect()
}
