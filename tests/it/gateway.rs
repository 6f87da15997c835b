//! The partner registry and the envelope gateway on both backends: partners stored and
//! audited, envelopes verified, decrypted and replay-checked (also across a reopened
//! database), ours always signed and encrypted when the partner requires it, and partner keys
//! fetched over real HTTP from a registered JWKS URL.

use crate::support::TestRegistry;
use chrono::{DateTime, Duration, Utc};
use nsr::clock::Clock;
use nsr::crypto::{
    Alg, EncryptedMessage, Jwks, KeyStore, SignatureProfile, SigningKey, VerifyPolicy,
    decrypt_with, encrypt_json, sign_envelope, verify_envelope,
};
use nsr::dci::{EnvelopeError, EnvelopePolicy, Envelopes};
use nsr::partners::{NewPartner, PartnerError, Partners, RemoteJwks};
use nsr::store::{self, Store};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const SENDER: &str = "spmis.example.org";

/// A partner system: its own keys, kept apart from ours.
struct PartnerSide {
    _dir: tempfile::TempDir,
    keys: KeyStore,
}

impl PartnerSide {
    fn new(now: DateTime<Utc>, algs: &[Alg]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = KeyStore::open_or_create_dir(&dir.path().join("keys")).unwrap();
        for alg in algs {
            keys.generate(*alg, now).unwrap();
        }
        Self { _dir: dir, keys }
    }

    fn signing(&self) -> &SigningKey {
        self.keys.signing_key().unwrap()
    }

    fn public_sig_jwks(&self) -> String {
        let jwks = Jwks {
            keys: vec![self.signing().public_jwk().clone()],
        };
        serde_json::to_string(&jwks).unwrap()
    }
}

/// The gateway under test over `store`, with our own keys in `keys_dir`.
fn gateway(t: &TestRegistry, store: Arc<dyn Store>, keys: Arc<KeyStore>) -> (Partners, Envelopes) {
    let clock: Arc<dyn Clock> = t.clock.clone();
    let partners = Partners::new(
        store.clone(),
        clock.clone(),
        RemoteJwks::new(Duration::minutes(5), std::time::Duration::from_secs(5)).unwrap(),
    );
    let envelopes = Envelopes::new(
        partners.clone(),
        keys,
        store,
        clock,
        "nsr.test".into(),
        EnvelopePolicy::default(),
    );
    (partners, envelopes)
}

fn our_keys(t: &TestRegistry) -> Arc<KeyStore> {
    let (keys, _) = KeyStore::open_or_init(&t.dir.path().join("our-keys"), t.clock.now()).unwrap();
    Arc::new(keys)
}

fn new_partner(profile: SignatureProfile, jwks: Option<String>) -> NewPartner {
    NewPartner {
        sender_id: SENDER.into(),
        client_id: "spmis".into(),
        scopes: vec!["registry.search".into()],
        signature_profile: Some(profile),
        algorithms: if profile == SignatureProfile::None {
            Vec::new()
        } else {
            vec![Alg::EdDsa, Alg::Es256]
        },
        jwks,
        client_secret: Some("correct horse battery staple".into()),
        ..NewPartner::default()
    }
}

fn header(message_id: &str, at: DateTime<Utc>, encrypted: bool) -> Value {
    json!({
        "version": "1.0.0",
        "message_id": message_id,
        "message_ts": at.to_rfc3339(),
        "action": "search",
        "sender_id": SENDER,
        "receiver_id": "nsr.test",
        "total_count": 1,
        "is_msg_encrypted": encrypted,
    })
}

fn search_message() -> Value {
    json!({
        "transaction_id": "T-1",
        "search_request": [{
            "reference_id": "R-1",
            "timestamp": "2026-11-01T09:00:00Z",
            "search_criteria": {"query_type": "idtype-value", "query": {"type": "UIN", "value": "Ünïcødé 名前"}},
        }],
    })
}

/// A partner's envelope as bytes on the wire.
fn envelope(
    key: Option<&SigningKey>,
    profile: SignatureProfile,
    header: &Value,
    message: &Value,
    now: DateTime<Utc>,
) -> Vec<u8> {
    let signature = key.map(|key| {
        sign_envelope(
            profile,
            key,
            SENDER,
            header,
            message,
            now,
            Duration::minutes(5),
        )
        .unwrap()
    });
    serde_json::to_vec(&json!({"signature": signature, "header": header, "message": message}))
        .unwrap()
}

fn code(result: Result<nsr::dci::Opened, EnvelopeError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => error.code(),
    }
}

async fn a_partner_is_stored_audited_and_unique(t: &TestRegistry) {
    let now = t.clock.now();
    let side = PartnerSide::new(now, &[Alg::EdDsa]);
    let (partners, _) = gateway(t, t.store().clone(), our_keys(t));
    let head = t.store().audit_head().await.unwrap();

    let (partner, generated) = partners
        .add(
            new_partner(SignatureProfile::Jws, Some(side.public_sig_jwks())),
            "admin",
        )
        .await
        .unwrap();
    assert!(
        generated.is_none(),
        "the secret was given, so none is generated"
    );
    assert!(partner.secret_matches("correct horse battery staple"));
    assert!(!partner.secret_matches("correct horse battery stapl"));

    let stored = partners.get(SENDER).await.unwrap().unwrap();
    assert_eq!(stored, partner);
    assert_eq!(partners.by_client_id("spmis").await.unwrap(), Some(partner));
    assert_eq!(t.store().audit_head().await.unwrap(), head + 1);
    let entries = t.store().audit_entries(head, 10).await.unwrap();
    assert_eq!(entries[0].action, "partner.add");
    assert!(
        !entries[0].detail.contains("argon2"),
        "the audit entry holds no secret hash"
    );

    let again = partners
        .add(
            new_partner(SignatureProfile::Jws, Some(side.public_sig_jwks())),
            "admin",
        )
        .await;
    assert!(
        matches!(again, Err(PartnerError::Exists(ref f)) if f == "sender_id"),
        "{again:?}"
    );
    let mut other = new_partner(SignatureProfile::Jws, Some(side.public_sig_jwks()));
    other.sender_id = "other.example.org".into();
    let clash = partners.add(other, "admin").await;
    assert!(
        matches!(clash, Err(PartnerError::Exists(ref f)) if f == "client_id"),
        "{clash:?}"
    );

    let disabled = partners.set_enabled(SENDER, false, "admin").await.unwrap();
    assert!(!disabled.enabled);
    assert!(!partners.get(SENDER).await.unwrap().unwrap().enabled);
    assert_eq!(t.registry.verify_audit().await.unwrap(), Ok(head + 2));
}

async fn a_signed_partner_must_sign_and_signatures_are_checked(t: &TestRegistry) {
    let now = t.clock.now();
    let side = PartnerSide::new(now, &[Alg::EdDsa]);
    let (partners, envelopes) = gateway(t, t.store().clone(), our_keys(t));
    partners
        .add(
            new_partner(SignatureProfile::Jws, Some(side.public_sig_jwks())),
            "admin",
        )
        .await
        .unwrap();
    let message = search_message();

    let unsigned = envelope(
        None,
        SignatureProfile::Jws,
        &header("m-1", now, false),
        &message,
        now,
    );
    assert_eq!(
        code(envelopes.open(&unsigned).await),
        "err.signature.missing"
    );

    // Signed under the other profile than the one registered.
    let wrong_profile = envelope(
        Some(side.signing()),
        SignatureProfile::DciSignature,
        &header("m-2", now, false),
        &message,
        now,
    );
    assert_eq!(
        code(envelopes.open(&wrong_profile).await),
        "err.signature.invalid"
    );

    // Signed by a key that is not the partner's.
    let stranger = PartnerSide::new(now, &[Alg::EdDsa]);
    let forged = envelope(
        Some(stranger.signing()),
        SignatureProfile::Jws,
        &header("m-3", now, false),
        &message,
        now,
    );
    assert_eq!(code(envelopes.open(&forged).await), "err.signature.invalid");

    // Changed after signing.
    let signed = envelope(
        Some(side.signing()),
        SignatureProfile::Jws,
        &header("m-4", now, false),
        &message,
        now,
    );
    let mut tampered: Value = serde_json::from_slice(&signed).unwrap();
    tampered["message"]["transaction_id"] = json!("T-2");
    let tampered = serde_json::to_vec(&tampered).unwrap();
    assert_eq!(
        code(envelopes.open(&tampered).await),
        "err.signature.invalid"
    );

    // Refused messages did not use up their ids: the good one is accepted.
    let opened = envelopes.open(&signed).await.unwrap();
    assert_eq!(opened.message_id, "m-4");
    assert_eq!(opened.message, message);
    assert!(opened.verified.signed);

    let stranger_sender = {
        let mut value: Value = serde_json::from_slice(&signed).unwrap();
        value["header"]["sender_id"] = json!("nobody.example.org");
        serde_json::to_vec(&value).unwrap()
    };
    assert_eq!(
        code(envelopes.open(&stranger_sender).await),
        "err.sender_id.invalid"
    );
    assert_eq!(code(envelopes.open(b"{not json").await), "err.request.bad");
    assert!(matches!(
        envelopes.open(b"[1, 2]").await,
        Err(EnvelopeError::Unparsable(_))
    ));

    partners.set_enabled(SENDER, false, "admin").await.unwrap();
    let later = envelope(
        Some(side.signing()),
        SignatureProfile::Jws,
        &header("m-5", now, false),
        &message,
        now,
    );
    assert_eq!(code(envelopes.open(&later).await), "err.sender_id.invalid");
}

async fn a_replayed_message_id_is_refused_after_a_restart(t: &TestRegistry) {
    let now = t.clock.now();
    let side = PartnerSide::new(now, &[Alg::EdDsa]);
    let keys = our_keys(t);
    let (partners, envelopes) = gateway(t, t.store().clone(), keys.clone());
    partners
        .add(
            new_partner(SignatureProfile::DciSignature, Some(side.public_sig_jwks())),
            "admin",
        )
        .await
        .unwrap();
    let message = search_message();
    let first = envelope(
        Some(side.signing()),
        SignatureProfile::DciSignature,
        &header("replayed", now, false),
        &message,
        now,
    );
    assert_eq!(code(envelopes.open(&first).await), "ok");
    assert_eq!(
        code(envelopes.open(&first).await),
        "rjct.message_id.duplicate"
    );
    drop((partners, envelopes));

    // A restart: a new connection pool on the same database, nothing shared in memory.
    let reopened = store::open(&t.url, 2).await.unwrap();
    let (_, envelopes) = gateway(t, reopened, keys);
    t.clock.advance(Duration::seconds(30));
    let now = t.clock.now();
    let replay = envelope(
        Some(side.signing()),
        SignatureProfile::DciSignature,
        &header("replayed", now, false),
        &message,
        now,
    );
    assert_eq!(
        code(envelopes.open(&replay).await),
        "rjct.message_id.duplicate"
    );
    let fresh = envelope(
        Some(side.signing()),
        SignatureProfile::DciSignature,
        &header("fresh", now, false),
        &message,
        now,
    );
    assert_eq!(code(envelopes.open(&fresh).await), "ok");

    // A message older than the replay window is refused by its timestamp: its id may have
    // been forgotten.
    let stale_ts = now - Duration::hours(25);
    let stale = envelope(
        Some(side.signing()),
        SignatureProfile::DciSignature,
        &header("stale", stale_ts, false),
        &message,
        now,
    );
    assert_eq!(
        code(envelopes.open(&stale).await),
        "rjct.message_ts.invalid"
    );
}

async fn encrypted_messages_are_opened_and_replies_sealed(t: &TestRegistry) {
    let now = t.clock.now();
    let side = PartnerSide::new(now, &[Alg::Es256, Alg::EcdhEsA256kw]);
    let keys = our_keys(t);
    let (partners, envelopes) = gateway(t, t.store().clone(), keys.clone());
    let mut new = new_partner(SignatureProfile::Jws, Some(side.public_sig_jwks()));
    new.encryption_key =
        Some(serde_json::to_string(side.keys.encryption_key().unwrap().public_jwk()).unwrap());
    new.requires_encryption = true;
    let (partner, _) = partners.add(new, "admin").await.unwrap();

    // In: the partner encrypts to our enc key and signs the ciphertext.
    let our_enc = keys.encryption_key().unwrap().public_jwk().clone();
    let plain = search_message();
    let sealed = encrypt_json(&plain, &our_enc).unwrap();
    let incoming = envelope(
        Some(side.signing()),
        SignatureProfile::Jws,
        &header("enc-1", now, true),
        &sealed,
        now,
    );
    let opened = envelopes.open(&incoming).await.unwrap();
    assert_eq!(opened.message, plain);

    // Ciphertext that does not decrypt (re-signed, so the signature is fine).
    let mut garbled = sealed.clone();
    garbled["ciphertext"] = json!("AAAA");
    let bad = envelope(
        Some(side.signing()),
        SignatureProfile::Jws,
        &header("enc-2", now, true),
        &garbled,
        now,
    );
    assert_eq!(code(envelopes.open(&bad).await), "err.encryption.invalid");

    // Out: our reply is encrypted to the partner's key and signed with our active key.
    let reply: Value = serde_json::from_slice(
        &envelopes
            .seal(
                &partner,
                header("reply-1", now, false),
                json!({"secret": "Ünïcødé"}),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(reply["header"]["is_msg_encrypted"], json!(true));
    let ours = keys.jwks().keys;
    let policy = VerifyPolicy::default();
    verify_envelope(
        SignatureProfile::Jws,
        reply["signature"].as_str(),
        &reply["header"],
        &reply["message"],
        &ours,
        &policy,
        now,
    )
    .unwrap();
    let encrypted = EncryptedMessage::from_value(&reply["message"]).unwrap();
    let plaintext = decrypt_with(&encrypted, side.keys.encryption_key().unwrap()).unwrap();
    let decrypted: Value = serde_json::from_slice(&plaintext).unwrap();
    assert_eq!(decrypted, json!({"secret": "Ünïcødé"}));
}

async fn replies_to_an_unsigned_partner_are_still_signed(t: &TestRegistry) {
    let now = t.clock.now();
    let keys = our_keys(t);
    let (partners, envelopes) = gateway(t, t.store().clone(), keys.clone());
    let (partner, _) = partners
        .add(new_partner(SignatureProfile::None, None), "admin")
        .await
        .unwrap();
    let message = search_message();
    let unsigned = envelope(
        None,
        SignatureProfile::None,
        &header("u-1", now, false),
        &message,
        now,
    );
    assert_eq!(code(envelopes.open(&unsigned).await), "ok");

    let reply: Value = serde_json::from_slice(
        &envelopes
            .seal(&partner, header("reply-2", now, false), message.clone())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(reply["message"], message);
    let signature = reply["signature"].as_str().unwrap();
    assert!(signature.contains("kidId=\"nsr.test|"), "{signature}");
    verify_envelope(
        SignatureProfile::DciSignature,
        Some(signature),
        &reply["header"],
        &reply["message"],
        &keys.jwks().keys,
        &VerifyPolicy::default(),
        now,
    )
    .unwrap();
}

async fn without_a_signing_key_nothing_is_sealed(t: &TestRegistry) {
    // Our keys directory holds only an encryption key: sealing must fail, not send unsigned.
    let mut keys = KeyStore::open_or_create_dir(&t.dir.path().join("enc-only")).unwrap();
    keys.generate(Alg::EcdhEsA256kw, t.clock.now()).unwrap();
    let (partners, envelopes) = gateway(t, t.store().clone(), Arc::new(keys));
    let (partner, _) = partners
        .add(new_partner(SignatureProfile::None, None), "admin")
        .await
        .unwrap();
    let sealed = envelopes.seal(
        &partner,
        header("reply-3", t.clock.now(), false),
        search_message(),
    );
    assert!(
        matches!(sealed, Err(nsr::dci::SealError::NoSigningKey)),
        "{sealed:?}"
    );
}

/// A partner JWKS endpoint on a real local port, serving whatever keys it is given.
async fn jwks_server(keys: Arc<Mutex<String>>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let keys = keys.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    keys.lock().unwrap().clone(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/jwks.json")
}

async fn keys_are_fetched_from_the_registered_url_and_refreshed_on_rotation(t: &TestRegistry) {
    let now = t.clock.now();
    let mut side = PartnerSide::new(now, &[Alg::EdDsa]);
    let published = Arc::new(Mutex::new(side.public_sig_jwks()));
    let url = jwks_server(published.clone()).await;
    let (partners, envelopes) = gateway(t, t.store().clone(), our_keys(t));
    let mut new = new_partner(SignatureProfile::Jws, None);
    new.jwks_url = Some(url);
    partners.add(new, "admin").await.unwrap();
    let message = search_message();

    let first = envelope(
        Some(side.signing()),
        SignatureProfile::Jws,
        &header("r-1", now, false),
        &message,
        now,
    );
    assert_eq!(code(envelopes.open(&first).await), "ok");

    // The partner rotates and publishes only its new key.
    side.keys.rotate(nsr::crypto::KeyUse::Sig, now).unwrap();
    *published.lock().unwrap() = side.public_sig_jwks();
    // Within a minute of the last fetch the cached set is used: the new kid is unknown.
    let early = envelope(
        Some(side.signing()),
        SignatureProfile::Jws,
        &header("r-2", now, false),
        &message,
        now,
    );
    assert_eq!(code(envelopes.open(&early).await), "err.signature.invalid");
    // After that, an unknown kid triggers one fetch, which finds the new key.
    t.clock.advance(Duration::seconds(61));
    let now = t.clock.now();
    let later = envelope(
        Some(side.signing()),
        SignatureProfile::Jws,
        &header("r-3", now, false),
        &message,
        now,
    );
    assert_eq!(code(envelopes.open(&later).await), "ok");
}

async fn a_message_id_sent_many_times_at_once_is_accepted_once(t: &TestRegistry) {
    let now = t.clock.now();
    let side = PartnerSide::new(now, &[Alg::EdDsa]);
    let (partners, envelopes) = gateway(t, t.store().clone(), our_keys(t));
    partners
        .add(
            new_partner(SignatureProfile::Jws, Some(side.public_sig_jwks())),
            "admin",
        )
        .await
        .unwrap();
    let message = search_message();
    // The same envelope 16 times, and 16 different ones, all at once: concurrent ids are
    // recorded together (group commit) and each id is fresh exactly once.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let id = if i % 2 == 0 {
            "same".to_owned()
        } else {
            format!("other-{i}")
        };
        let body = envelope(
            Some(side.signing()),
            SignatureProfile::Jws,
            &header(&id, now, false),
            &message,
            now,
        );
        let envelopes = envelopes.clone();
        tasks.push(tokio::spawn(async move {
            (id, code(envelopes.open(&body).await))
        }));
    }
    let mut accepted_same = 0;
    for task in tasks {
        let (id, code) = task.await.unwrap();
        match (id.as_str(), code) {
            ("same", "ok") => accepted_same += 1,
            ("same", other) => assert_eq!(other, "rjct.message_id.duplicate"),
            (_, other) => assert_eq!(other, "ok", "{id}"),
        }
    }
    assert_eq!(accepted_same, 1);
}

crate::on_both_backends!(
    a_message_id_sent_many_times_at_once_is_accepted_once,
    a_partner_is_stored_audited_and_unique,
    a_signed_partner_must_sign_and_signatures_are_checked,
    a_replayed_message_id_is_refused_after_a_restart,
    encrypted_messages_are_opened_and_replies_sealed,
    replies_to_an_unsigned_partner_are_still_signed,
    without_a_signing_key_nothing_is_sealed,
    keys_are_fetched_from_the_registered_url_and_refreshed_on_rotation,
);
