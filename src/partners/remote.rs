//! Partner JWKS published at a registered URL: fetched over HTTPS, cached, refreshed.

use crate::crypto::PublicJwk;
use chrono::{DateTime, Duration, Utc};
use moka::future::Cache;
use std::sync::Arc;

/// Largest JWKS document accepted (a set of a dozen RSA-4096 keys is under 16 KiB).
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// A partner's keys as fetched, and when.
#[derive(Clone)]
struct Fetched {
    keys: Arc<Vec<PublicJwk>>,
    at: DateTime<Utc>,
}

/// Fetches and caches partner JWKS documents by URL.
///
/// A document is reused for `ttl`; a signature naming a kid the cached document lacks (the
/// partner rotated its key) triggers one early fetch, but not more often than `min_refresh`, so
/// a stream of bad kids cannot turn the gateway into a request amplifier against the partner.
#[derive(Clone)]
pub struct RemoteJwks {
    client: reqwest::Client,
    cache: Cache<String, Fetched>,
    ttl: Duration,
    min_refresh: Duration,
}

impl RemoteJwks {
    /// `ttl`: how long a fetched document is used; `timeout`: per fetch.
    pub fn new(ttl: Duration, timeout: std::time::Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A registered URL is fetched as registered; a redirect could lead anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            cache: Cache::builder().max_capacity(10_000).build(),
            ttl,
            min_refresh: Duration::seconds(60),
        })
    }

    /// The keys at `url`, from the cache when fresh (time is `now`, from the caller's clock).
    pub async fn keys(
        &self,
        url: &str,
        kid: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Arc<Vec<PublicJwk>>, String> {
        if let Some(cached) = self.cache.get(url).await {
            let fresh = now - cached.at < self.ttl;
            let has_kid =
                kid.is_none_or(|k| cached.keys.iter().any(|j| j.kid.as_deref() == Some(k)));
            let may_refresh = now - cached.at >= self.min_refresh;
            if fresh && (has_kid || !may_refresh) {
                return Ok(cached.keys);
            }
        }
        let keys = Arc::new(self.fetch(url).await?);
        self.cache
            .insert(
                url.to_owned(),
                Fetched {
                    keys: keys.clone(),
                    at: now,
                },
            )
            .await;
        Ok(keys)
    }

    async fn fetch(&self, url: &str) -> Result<Vec<PublicJwk>, String> {
        let response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("GET {url}: the document is too large"));
        }
        // Read in chunks so a body without a length cannot grow past the limit.
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("GET {url}: the document is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        let text = std::str::from_utf8(&body).map_err(|_| format!("GET {url}: not UTF-8"))?;
        let jwks = super::parse_public_jwks(text).map_err(|e| format!("GET {url}: {e}"))?;
        Ok(jwks.keys)
    }
}
