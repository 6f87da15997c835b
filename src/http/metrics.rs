//! Prometheus metrics, kept by hand: a request counter by route and status, and registry
//! gauges read from the store at scrape time.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Counters shared by every request.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            requests: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    fn count(&self, method: &str, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
    }

    /// The exposition text.
    /// The exposition text. `audit_heads`: the last entry of the audit chain and of the
    /// disclosure chain (`registry::audit`), when the database answered.
    pub fn render(
        &self,
        records: Option<&[(String, i64)]>,
        audit_heads: Option<(i64, i64)>,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP nsr_uptime_seconds Seconds since the process started."
        );
        let _ = writeln!(out, "# TYPE nsr_uptime_seconds gauge");
        let _ = writeln!(
            out,
            "nsr_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );
        let _ = writeln!(
            out,
            "# HELP nsr_http_requests_total HTTP requests by method, route and status."
        );
        let _ = writeln!(out, "# TYPE nsr_http_requests_total counter");
        for ((method, route, status), count) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "nsr_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP nsr_database_up Whether the database answered this scrape."
        );
        let _ = writeln!(out, "# TYPE nsr_database_up gauge");
        let _ = writeln!(out, "nsr_database_up {}", u8::from(records.is_some()));
        if let Some(records) = records {
            let _ = writeln!(out, "# HELP nsr_records Current records by register.");
            let _ = writeln!(out, "# TYPE nsr_records gauge");
            for (register, count) in records {
                let _ = writeln!(out, "nsr_records{{register=\"{register}\"}} {count}");
            }
        }
        if let Some((seq, disclosures)) = audit_heads {
            let _ = writeln!(out, "# HELP nsr_audit_entries Entries in the audit chain.");
            let _ = writeln!(out, "# TYPE nsr_audit_entries gauge");
            let _ = writeln!(out, "nsr_audit_entries {seq}");
            let _ = writeln!(
                out,
                "# HELP nsr_disclosure_chain_entries Entries in the disclosure chain (one per disclosure)."
            );
            let _ = writeln!(out, "# TYPE nsr_disclosure_chain_entries gauge");
            let _ = writeln!(out, "nsr_disclosure_chain_entries {disclosures}");
        }
        out
    }
}

/// Middleware: counts each request under its route template (never the raw path, which could
/// carry an identifier).
pub async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics.count(&method, &route, response.status().as_u16());
    response
}
