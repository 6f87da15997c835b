//! The conformance cases (conformance/cases) against nsr in process, on both backends: every
//! case passes, and together they expect every status and reason code the gateway emits.

use super::{Dci, SENDER};
use crate::support::TestRegistry;
use async_trait::async_trait;
use axum::body::Body;
use http_body_util::BodyExt;
use nsr::clock::Clock;
use nsr::conformance::{self, Target, Transport};
use nsr::crypto::SignatureProfile;
use std::collections::BTreeSet;
use std::path::Path;
use tower::ServiceExt;

/// Requests through the router, as the HTTP server would pass them.
struct InProcess(axum::Router);

#[async_trait]
impl Transport for InProcess {
    async fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut request = axum::http::Request::post(path);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = self
            .0
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Ok((status, bytes.to_vec()))
    }
}

fn cases() -> Vec<conformance::Case> {
    conformance::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/cases")).unwrap()
}

async fn every_conformance_case_passes(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let target = Target {
        sender_id: SENDER.into(),
        receiver_id: Some(super::OUR_ID.into()),
        signing: Some((
            dci.partner.keys.signing_key().unwrap(),
            SignatureProfile::Jws,
        )),
        token: dci.token().await,
        callback_url: "http://127.0.0.1:9/callback".into(),
        conditions: BTreeSet::from(["small-page-limit".to_owned(), "consent-policy".to_owned()]),
    };
    let clock = t.clock.clone();
    let now = move || clock.now();
    let outcomes = conformance::run(&cases(), &target, &InProcess(dci.app.clone()), &now).await;
    let report = conformance::report(&outcomes);
    assert!(outcomes.iter().all(|o| o.passed()), "{report}");
    assert!(outcomes.len() >= 40, "{report}");
}

#[test]
fn the_cases_cover_every_code_the_gateway_emits() {
    let expected: BTreeSet<String> = cases().iter().flat_map(|c| c.codes()).collect();
    let missing: Vec<&&str> = nsr::dci::codes::EMITTED
        .iter()
        .filter(|code| !expected.contains(**code))
        .collect();
    assert!(
        missing.is_empty(),
        "no conformance case expects {missing:?}"
    );
    // And every code a case expects is one the spec defines.
    for code in &expected {
        assert!(
            nsr::dci::codes::EMITTED.contains(&code.as_str()),
            "{code} is not a code nsr emits"
        );
    }
}

crate::on_both_backends!(every_conformance_case_passes);
