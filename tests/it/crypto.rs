//! Message security: canonical JSON against Python, RFC known-answer tests, signatures and
//! JWE against independent implementations (Python's json module, jwcrypto), our own
//! signatures under both profiles, the refusals, property tests, the keys CLI and `nsr serve`'s
//! key handling. Fixtures are in tests/fixtures/security (made once by make_fixtures.py).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, TimeZone, Utc};
use nsr::crypto::{
    Alg, DciSignature, DecryptionKey, EncryptedMessage, JweError, KeyError, KeyStore, PublicJwk,
    SignError, SignatureProfile, SigningKey, VerifyError, VerifyPolicy, canonical_json, decrypt,
    decrypt_json, decrypt_with, encrypt, encrypt_json, seal_envelope, sign_envelope, signing_input,
    verify_envelope, verify_jws_compact,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/security")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn b64u(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn at(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).unwrap()
}

/// An Ed25519 private key as PKCS#8 v1 DER from its 32-byte seed (RFC 8410 §7 layout).
fn ed25519_pkcs8(seed: &[u8]) -> Vec<u8> {
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend_from_slice(seed);
    der
}

/// The RFC 8037 appendix A.1 key, which the docs' worked example also uses.
fn rfc8037_key() -> SigningKey {
    SigningKey::from_pkcs8(
        Alg::EdDsa,
        &ed25519_pkcs8(&b64u("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")),
    )
    .unwrap()
}

fn jwk(value: &Value) -> PublicJwk {
    serde_json::from_value(value.clone()).unwrap()
}

// ---- canonical JSON ------------------------------------------------------------------------

#[test]
fn canonical_json_matches_python_json_dumps_byte_for_byte() {
    let fixture = fixture("canonical_python.json");
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() > 10);
    for case in cases {
        let value: Value = serde_json::from_str(case["input"].as_str().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            case["canonical"].as_str().unwrap(),
            "input {}",
            case["input"]
        );
    }
    // Floats: Python writes repr(float); reading that text and writing it again must give the
    // same text (this also needs serde_json's exact float parsing, `float_roundtrip`).
    let floats = fixture["floats"].as_array().unwrap();
    assert!(floats.len() > 2500);
    let mismatches: Vec<String> = floats
        .iter()
        .map(|f| f.as_str().unwrap())
        .filter_map(|text| {
            let value: Value = serde_json::from_str(text).unwrap();
            let ours = String::from_utf8(canonical_json(&value)).unwrap();
            (ours != text).then(|| format!("{text} -> {ours}"))
        })
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

// ---- known-answer tests --------------------------------------------------------------------

#[test]
fn rfc_8037_ed25519_example_verifies_and_our_signer_reproduces_it() {
    // RFC 8037 A.2 public key, A.3 thumbprint, A.4 signature, A.5 verification.
    let public = jwk(&json!({
        "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    }));
    assert_eq!(
        public.thumbprint().unwrap(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    let jws = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    let (header, payload) = verify_jws_compact(jws, None, &public, &[Alg::EdDsa]).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(payload, b"Example of Ed25519 signing");

    let key = rfc8037_key();
    assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    let (signing, signature) = jws.rsplit_once('.').unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.encode(key.sign(signing.as_bytes()).unwrap()),
        signature
    );
    // Detached (RFC 7515 appendix F): same signature, payload supplied separately.
    let detached = jws.replace(".RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.", "..");
    verify_jws_compact(
        &detached,
        Some(b"Example of Ed25519 signing"),
        &public,
        &[Alg::EdDsa],
    )
    .unwrap();
    assert!(
        verify_jws_compact(
            &detached,
            Some(b"Example of Ed25519 signinG"),
            &public,
            &[Alg::EdDsa]
        )
        .is_err()
    );
    // Only the allowed algorithms.
    assert!(verify_jws_compact(jws, None, &public, &[Alg::Es256]).is_err());
}

#[test]
fn rfc_7520_rs256_example_verifies_attached_and_detached() {
    // RFC 7520 §4.1: RSA v1.5 signature with the §3.3 key.
    let vector = fixture("rfc7520_rs256.json");
    let public = jwk(&vector["public_key"]);
    let protected = vector["protected"].as_str().unwrap();
    let payload = vector["payload"].as_str().unwrap();
    let signature = vector["signature"].as_str().unwrap();
    let compact = format!("{protected}.{payload}.{signature}");
    let (header, text) = verify_jws_compact(&compact, None, &public, &[Alg::Rs256]).unwrap();
    assert_eq!(header["kid"], "bilbo.baggins@hobbiton.example");
    assert!(
        String::from_utf8(text.clone())
            .unwrap()
            .starts_with("It’s a dangerous business")
    );
    let detached = format!("{protected}..{signature}");
    verify_jws_compact(&detached, Some(&text), &public, &[Alg::Rs256]).unwrap();
    let mut changed = text.clone();
    changed[0] ^= 1;
    assert!(verify_jws_compact(&detached, Some(&changed), &public, &[Alg::Rs256]).is_err());
}

#[test]
fn the_worked_example_in_the_docs_is_reproduced_byte_for_byte() {
    // Values computed independently in Python (json + cryptography); docs/message-security.md
    // shows them.
    let example = fixture("worked_example.json");
    let key = rfc8037_key();
    assert_eq!(key.kid(), example["key"]["kid"].as_str().unwrap());
    let header = &example["header"];
    let message = &example["message"];
    let created = example["created"].as_i64().unwrap();
    assert_eq!(
        String::from_utf8(signing_input(header, message)).unwrap(),
        example["signing_input"].as_str().unwrap()
    );
    let now = at(created);
    let validity = Duration::seconds(300);
    let dci = sign_envelope(
        SignatureProfile::DciSignature,
        &key,
        "spmis.example",
        header,
        message,
        now,
        validity,
    )
    .unwrap();
    assert_eq!(dci, example["dci_signature"].as_str().unwrap());
    let jws = sign_envelope(
        SignatureProfile::Jws,
        &key,
        "spmis.example",
        header,
        message,
        now,
        validity,
    )
    .unwrap();
    assert_eq!(jws, example["jws"].as_str().unwrap());
    let (protected_b64, _) = jws.split_once("..").unwrap();
    assert_eq!(
        String::from_utf8(b64u(protected_b64)).unwrap(),
        example["jws_protected"].as_str().unwrap()
    );
    let parsed = DciSignature::parse(&dci).unwrap();
    assert_eq!(parsed.created, created);
    let keys = [key.public_jwk().clone()];
    for (profile, signature) in [
        (SignatureProfile::DciSignature, &dci),
        (SignatureProfile::Jws, &jws),
    ] {
        verify_envelope(
            profile,
            Some(signature),
            header,
            message,
            &keys,
            &VerifyPolicy::default(),
            now + Duration::seconds(30),
        )
        .unwrap();
    }
}

#[test]
fn a_sealed_envelope_sends_the_bytes_it_signed() {
    // The worked example, sealed whole: its signature is the one `sign_envelope` makes, and
    // what follows it is the signing input itself (header and message in canonical form).
    let example = fixture("worked_example.json");
    let key = rfc8037_key();
    let (header, message) = (&example["header"], &example["message"]);
    let now = at(example["created"].as_i64().unwrap());
    let input = signing_input(header, message);
    for (profile, signature) in [
        (SignatureProfile::DciSignature, &example["dci_signature"]),
        (SignatureProfile::Jws, &example["jws"]),
    ] {
        let body = seal_envelope(
            profile,
            &key,
            "spmis.example",
            header,
            message,
            now,
            Duration::seconds(300),
        )
        .unwrap();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(&sent["signature"], signature);
        assert_eq!(&sent["header"], header);
        assert_eq!(&sent["message"], message);
        let mut expected = b"{\"signature\":".to_vec();
        expected.extend(canonical_json(signature));
        expected.push(b',');
        expected.extend_from_slice(&input[1..]);
        assert_eq!(body, expected);
        verify_envelope(
            profile,
            sent["signature"].as_str(),
            &sent["header"],
            &sent["message"],
            &[key.public_jwk().clone()],
            &VerifyPolicy::default(),
            now,
        )
        .unwrap();
    }
}

#[test]
fn signatures_made_by_jwcrypto_and_by_a_python_dci_signer_verify() {
    let interop = fixture("interop_signatures.json");
    let now = at(interop["created"].as_i64().unwrap() + 10);
    let cases = interop["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let profile: SignatureProfile = case["profile"].as_str().unwrap().parse().unwrap();
        let keys = [jwk(&case["jwk"])];
        let verified = verify_envelope(
            profile,
            case["signature"].as_str(),
            &interop["header"],
            &interop["message"],
            &keys,
            &VerifyPolicy::default(),
            now,
        )
        .unwrap_or_else(|e| panic!("{} {}: {e}", case["profile"], case["alg"]));
        assert_eq!(verified.alg.unwrap().as_str(), case["alg"]);
        // And the same signature does not cover another message.
        let mut other = interop["message"].clone();
        other["transaction_id"] = json!("txn-0002");
        assert!(
            verify_envelope(
                profile,
                case["signature"].as_str(),
                &interop["header"],
                &other,
                &keys,
                &VerifyPolicy::default(),
                now,
            )
            .is_err()
        );
    }
}

#[test]
fn encrypted_messages_made_by_jwcrypto_decrypt() {
    let fixture = fixture("jwe_jwcrypto.json");
    let plaintext = fixture["plaintext"].as_str().unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let alg: Alg = case["alg"].as_str().unwrap().parse().unwrap();
        let der = STANDARD.decode(case["pkcs8"].as_str().unwrap()).unwrap();
        let key = DecryptionKey::from_pkcs8(alg, &der).unwrap();
        assert_eq!(key.kid(), case["kid"].as_str().unwrap());
        let message = EncryptedMessage::from_value(&case["encrypted_message"]).unwrap();
        assert_eq!(decrypt_with(&message, &key).unwrap(), plaintext.as_bytes());
        let mut tampered = message.clone();
        tampered.ciphertext.replace_range(
            0..1,
            if tampered.ciphertext.starts_with('A') {
                "B"
            } else {
                "A"
            },
        );
        assert_eq!(decrypt_with(&tampered, &key), Err(JweError::Failed));
    }
}

// ---- our own signatures --------------------------------------------------------------------

struct Keys {
    _dir: tempfile::TempDir,
    store: KeyStore,
}

/// One key of every algorithm, generated once for the whole test binary.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut store = KeyStore::open_or_create_dir(&dir.path().join("keys")).unwrap();
        for (i, alg) in Alg::ALL.into_iter().enumerate() {
            store.generate(alg, at(1_700_000_000 + i as i64)).unwrap();
        }
        Keys { _dir: dir, store }
    })
}

fn signing_key(alg: Alg) -> &'static SigningKey {
    let store = &keys().store;
    store
        .list()
        .into_iter()
        .filter(|k| k.alg == alg)
        .find_map(|k| store.signing_key_by_kid(&k.kid))
        .unwrap()
}

fn enc_jwk(alg: Alg) -> PublicJwk {
    keys()
        .store
        .jwks()
        .keys
        .into_iter()
        .find(|k| k.alg.as_deref() == Some(alg.as_str()))
        .unwrap()
}

const NOW: i64 = 1_795_255_200;
const SENDER: &str = "nsr.registry.example";

fn sample_envelope() -> (Value, Value) {
    let header = json!({
        "version": "1.0.0", "message_id": "m-1", "message_ts": "2026-11-21T10:00:00Z",
        "action": "on-search", "status": "succ", "sender_id": SENDER, "receiver_id": "spmis",
        "total_count": 1, "is_msg_encrypted": false
    });
    let message = json!({
        "transaction_id": "t-1", "correlation_id": "c-1",
        "search_response": [{"reference_id": "r-1", "timestamp": "2026-11-21T10:00:00Z",
            "status": "succ", "data": {"reg_records": [
                {"name": {"given_name": "Zoë", "surname": "Nguyễn 😀"}, "poverty_score": 2.3333333333333335,
                 "group_size": 5, "note": "tab\there \"quoted\" back\\slash"}]}}]
    });
    (header, message)
}

fn sign(profile: SignatureProfile, alg: Alg, header: &Value, message: &Value) -> String {
    sign_envelope(
        profile,
        signing_key(alg),
        SENDER,
        header,
        message,
        at(NOW),
        Duration::seconds(300),
    )
    .unwrap()
}

fn verify_at(
    profile: SignatureProfile,
    signature: Option<&str>,
    header: &Value,
    message: &Value,
    keys: &[PublicJwk],
    now: i64,
) -> Result<nsr::crypto::Verified, VerifyError> {
    verify_envelope(
        profile,
        signature,
        header,
        message,
        keys,
        &VerifyPolicy::default(),
        at(now),
    )
}

fn partner_keys() -> Vec<PublicJwk> {
    keys().store.jwks().keys
}

const PROFILES: [SignatureProfile; 2] = [SignatureProfile::Jws, SignatureProfile::DciSignature];

#[test]
fn our_signatures_verify_after_json_round_trips_for_both_profiles_and_every_algorithm() {
    let (header, message) = sample_envelope();
    for profile in PROFILES {
        for alg in Alg::SIGNING {
            let signature = sign(profile, alg, &header, &message);
            let envelope = json!({"signature": signature, "header": header, "message": message});
            let compact: Value =
                serde_json::from_str(&serde_json::to_string(&envelope).unwrap()).unwrap();
            let pretty: Value =
                serde_json::from_str(&serde_json::to_string_pretty(&envelope).unwrap()).unwrap();
            // Re-serialised with every object's keys sorted (as a Python or Java peer might).
            let sorted: Value = serde_json::from_slice(&canonical_json(&envelope)).unwrap();
            // And with the keys in reverse order.
            let reversed = reverse_keys(&envelope);
            for received in [&compact, &pretty, &sorted, &reversed] {
                let verified = verify_at(
                    profile,
                    received["signature"].as_str(),
                    &received["header"],
                    &received["message"],
                    &partner_keys(),
                    NOW + 5,
                )
                .unwrap_or_else(|e| panic!("{profile} {alg}: {e}"));
                assert_eq!(verified.alg, Some(alg));
                assert_eq!(verified.kid.as_deref(), Some(signing_key(alg).kid()));
                assert_eq!(verified.created, Some(at(NOW)));
                assert_eq!(verified.expires, Some(at(NOW + 300)));
            }
        }
    }
}

fn reverse_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .rev()
                .map(|(k, v)| (k.clone(), reverse_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(reverse_keys).collect()),
        other => other.clone(),
    }
}

#[test]
fn a_missing_signature_is_missing_and_bad_ones_are_invalid() {
    let (header, message) = sample_envelope();
    let keys = partner_keys();
    for profile in PROFILES {
        for absent in [None, Some(""), Some("   ")] {
            let error = verify_at(profile, absent, &header, &message, &keys, NOW).unwrap_err();
            assert_eq!(error, VerifyError::Missing);
            assert_eq!(error.dci_code(), "err.signature.missing");
        }
        let signature = sign(profile, Alg::EdDsa, &header, &message);
        let invalid = |result: Result<nsr::crypto::Verified, VerifyError>, what: &str| {
            let error = result.expect_err(what);
            assert_eq!(error.dci_code(), "err.signature.invalid", "{what}: {error}");
        };
        // Within the skew on both sides: fine.
        verify_at(
            profile,
            Some(&signature),
            &header,
            &message,
            &keys,
            NOW - 59,
        )
        .unwrap();
        verify_at(
            profile,
            Some(&signature),
            &header,
            &message,
            &keys,
            NOW + 300 + 59,
        )
        .unwrap();
        invalid(
            verify_at(
                profile,
                Some(&signature),
                &header,
                &message,
                &keys,
                NOW + 300 + 61,
            ),
            "expired",
        );
        invalid(
            verify_at(
                profile,
                Some(&signature),
                &header,
                &message,
                &keys,
                NOW - 61,
            ),
            "created in the future",
        );
        // Wrong key: another partner's keys.
        let other_dir = tempfile::tempdir().unwrap();
        let mut other = KeyStore::open_or_create_dir(&other_dir.path().join("k")).unwrap();
        other.generate(Alg::EdDsa, at(NOW)).unwrap();
        invalid(
            verify_at(
                profile,
                Some(&signature),
                &header,
                &message,
                &other.jwks().keys,
                NOW,
            ),
            "wrong key",
        );
        // The algorithm is not allowed for this partner.
        invalid(
            verify_envelope(
                profile,
                Some(&signature),
                &header,
                &message,
                &keys,
                &VerifyPolicy {
                    allowed_algs: &[Alg::Es256, Alg::Rs256],
                    ..VerifyPolicy::default()
                },
                at(NOW),
            ),
            "alg not allowed",
        );
        // Algorithm confusion: the partner's key registered under that kid is for ES256.
        let mut confused = enc_jwk(Alg::Es256);
        confused.kid = Some(signing_key(Alg::EdDsa).kid().to_owned());
        invalid(
            verify_at(
                profile,
                Some(&signature),
                &header,
                &message,
                &[confused],
                NOW,
            ),
            "key of another algorithm under the same kid",
        );
    }

    // DCI: the sender in kidId must be the header's sender.
    let dci = sign(
        SignatureProfile::DciSignature,
        Alg::EdDsa,
        &header,
        &message,
    );
    let mut spoofed = header.clone();
    spoofed["sender_id"] = json!("someone-else");
    assert!(
        verify_at(
            SignatureProfile::DciSignature,
            Some(&dci),
            &spoofed,
            &message,
            &keys,
            NOW
        )
        .is_err()
    );
    // A JWS given where a DCI signature is expected, and the other way round.
    let jws = sign(SignatureProfile::Jws, Alg::EdDsa, &header, &message);
    assert!(
        verify_at(
            SignatureProfile::DciSignature,
            Some(&jws),
            &header,
            &message,
            &keys,
            NOW
        )
        .is_err()
    );
    assert!(
        verify_at(
            SignatureProfile::Jws,
            Some(&dci),
            &header,
            &message,
            &keys,
            NOW
        )
        .is_err()
    );
}

/// A detached JWS over the sample envelope with our EdDSA key and the given protected header.
fn jws_with_header(protected: &Value) -> String {
    let (header, message) = sample_envelope();
    let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(protected).unwrap());
    let input = format!(
        "{protected}.{}",
        URL_SAFE_NO_PAD.encode(signing_input(&header, &message))
    );
    let signature = signing_key(Alg::EdDsa).sign(input.as_bytes()).unwrap();
    format!("{protected}..{}", URL_SAFE_NO_PAD.encode(signature))
}

#[test]
fn jws_headers_that_could_subvert_the_check_are_refused() {
    let (header, message) = sample_envelope();
    let keys = partner_keys();
    let kid = signing_key(Alg::EdDsa).kid();
    let base = json!({"alg": "EdDSA", "kid": kid, "iat": NOW, "exp": NOW + 300});
    // The well-formed one verifies (so each refusal below is for the one change made).
    verify_at(
        SignatureProfile::Jws,
        Some(&jws_with_header(&base)),
        &header,
        &message,
        &keys,
        NOW,
    )
    .unwrap();
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut with = |what: &'static str, change: &dyn Fn(&mut Value)| {
        let mut h = base.clone();
        change(&mut h);
        cases.push((what, h));
    };
    with("alg none", &|h| h["alg"] = json!("none"));
    with("alg HS256", &|h| h["alg"] = json!("HS256"));
    with("alg missing", &|h| {
        h.as_object_mut().unwrap().remove("alg");
    });
    with("embedded jwk", &|h| {
        h["jwk"] = serde_json::to_value(signing_key(Alg::EdDsa).public_jwk()).unwrap()
    });
    with("jku", &|h| {
        h["jku"] = json!("https://attacker.example/jwks.json")
    });
    with("x5u", &|h| {
        h["x5u"] = json!("https://attacker.example/cert.pem")
    });
    with("unknown crit", &|h| {
        h["crit"] = json!(["exp", "zip2"]);
        h["zip2"] = json!(1);
    });
    with("empty crit", &|h| h["crit"] = json!([]));
    with("b64 false", &|h| {
        h["b64"] = json!(false);
        h["crit"] = json!(["b64"]);
    });
    with("no iat", &|h| {
        h.as_object_mut().unwrap().remove("iat");
    });
    with("no exp", &|h| {
        h.as_object_mut().unwrap().remove("exp");
    });
    with("exp before iat", &|h| h["exp"] = json!(NOW - 1));
    with("unknown kid", &|h| h["kid"] = json!("not-a-registered-kid"));
    for (what, protected) in cases {
        let error = verify_at(
            SignatureProfile::Jws,
            Some(&jws_with_header(&protected)),
            &header,
            &message,
            &keys,
            NOW,
        )
        .expect_err(what);
        assert!(matches!(error, VerifyError::Invalid { .. }), "{what}");
    }
    // `crit` naming the understood `exp` is fine.
    let mut crit = base.clone();
    crit["crit"] = json!(["exp"]);
    verify_at(
        SignatureProfile::Jws,
        Some(&jws_with_header(&crit)),
        &header,
        &message,
        &keys,
        NOW,
    )
    .unwrap();
}

#[test]
fn the_none_profile_accepts_unsigned_but_still_checks_a_signature_that_is_present() {
    let (header, message) = sample_envelope();
    let keys = partner_keys();
    let unsigned = verify_at(SignatureProfile::None, None, &header, &message, &[], NOW).unwrap();
    assert!(!unsigned.signed);
    for profile in PROFILES {
        let signature = sign(profile, Alg::Es256, &header, &message);
        let verified = verify_at(
            SignatureProfile::None,
            Some(&signature),
            &header,
            &message,
            &keys,
            NOW,
        )
        .unwrap();
        assert!(verified.signed);
        assert_eq!(verified.profile, profile);
        let mut changed = message.clone();
        changed["transaction_id"] = json!("t-2");
        assert!(
            verify_at(
                SignatureProfile::None,
                Some(&signature),
                &header,
                &changed,
                &keys,
                NOW
            )
            .is_err()
        );
    }
    // We never sign with `none`, and never with a zero validity.
    let key = signing_key(Alg::EdDsa);
    assert_eq!(
        sign_envelope(
            SignatureProfile::None,
            key,
            SENDER,
            &header,
            &message,
            at(NOW),
            Duration::seconds(300)
        ),
        Err(SignError::Unsigned)
    );
    assert_eq!(
        sign_envelope(
            SignatureProfile::Jws,
            key,
            SENDER,
            &header,
            &message,
            at(NOW),
            Duration::zero()
        ),
        Err(SignError::Validity)
    );
    assert_eq!(
        sign_envelope(
            SignatureProfile::DciSignature,
            key,
            "a\"b",
            &header,
            &message,
            at(NOW),
            Duration::seconds(300)
        ),
        Err(SignError::SenderId)
    );
}

// ---- encryption ----------------------------------------------------------------------------

#[test]
fn an_encrypted_message_is_signed_as_sent_and_checked_before_decryption() {
    let (mut header, message) = sample_envelope();
    for alg in [Alg::EcdhEsA256kw, Alg::RsaOaep256] {
        let recipient = enc_jwk(alg);
        let encrypted = encrypt_json(&message, &recipient).unwrap();
        assert_eq!(encrypted["header"]["alg"], alg.as_str());
        assert_eq!(encrypted["header"]["enc"], "A256GCM");
        assert_eq!(encrypted["header"]["kid"], recipient.kid.clone().unwrap());
        assert_eq!(
            encrypted["header"].get("epk").is_some(),
            alg == Alg::EcdhEsA256kw
        );
        header["is_msg_encrypted"] = json!(true);
        let signature = sign(SignatureProfile::Jws, Alg::EdDsa, &header, &encrypted);
        // The receiver: signature first, over the EncryptedMessage as received…
        verify_at(
            SignatureProfile::Jws,
            Some(&signature),
            &header,
            &encrypted,
            &partner_keys(),
            NOW,
        )
        .unwrap();
        // …then decryption with our key chosen by kid.
        assert_eq!(decrypt_json(&encrypted, &keys().store).unwrap(), message);
        // Any change to the ciphertext breaks the signature before decryption is attempted.
        let mut tampered = encrypted.clone();
        let ciphertext = tampered["ciphertext"].as_str().unwrap().to_owned();
        let flipped = if ciphertext.starts_with('A') {
            "B"
        } else {
            "A"
        };
        tampered["ciphertext"] = json!(format!("{flipped}{}", &ciphertext[1..]));
        assert!(
            verify_at(
                SignatureProfile::Jws,
                Some(&signature),
                &header,
                &tampered,
                &partner_keys(),
                NOW
            )
            .is_err()
        );
        assert!(decrypt_json(&tampered, &keys().store).is_err());
    }
}

#[test]
fn decryption_refuses_wrong_keys_algorithms_and_shapes() {
    let store = &keys().store;
    let message = encrypt(b"{\"a\":1}", &enc_jwk(Alg::EcdhEsA256kw)).unwrap();
    assert_eq!(decrypt(&message, store).unwrap(), b"{\"a\":1}");
    let mut unknown = message.clone();
    unknown.header.kid = "nobody".to_owned();
    assert!(matches!(
        decrypt(&unknown, store),
        Err(JweError::UnknownKey(_))
    ));
    // Algorithm confusion: the RSA key's kid with an ECDH-ES header.
    let mut confused = message.clone();
    confused.header.kid = enc_jwk(Alg::RsaOaep256).kid.unwrap();
    assert!(matches!(
        decrypt(&confused, store),
        Err(JweError::Unsupported(_))
    ));
    let mut enc = message.clone();
    enc.header.enc = "A128CBC-HS256".to_owned();
    assert!(matches!(
        decrypt(&enc, store),
        Err(JweError::Unsupported(_))
    ));
    let mut no_epk = message.clone();
    no_epk.header.epk = None;
    assert!(decrypt(&no_epk, store).is_err());
    // Another ephemeral key: the key wrap fails.
    let other = encrypt(b"{\"a\":1}", &enc_jwk(Alg::EcdhEsA256kw)).unwrap();
    let mut swapped = message.clone();
    swapped.header.epk = other.header.epk;
    assert_eq!(decrypt(&swapped, store), Err(JweError::Failed));
    // Members the DCI shape does not have are refused, not ignored.
    let mut value = message.to_value();
    value["protected"] = json!("eyJ6aXAiOiJERUYifQ");
    assert!(EncryptedMessage::from_value(&value).is_err());
    let mut value = message.to_value();
    value["header"]["zip"] = json!("DEF");
    assert!(EncryptedMessage::from_value(&value).is_err());
    for field in ["header", "ciphertext", "encrypted_key", "tag", "iv"] {
        let mut value = message.to_value();
        value.as_object_mut().unwrap().remove(field);
        assert!(EncryptedMessage::from_value(&value).is_err(), "{field}");
    }
    // Encrypting to a signing key is refused.
    assert!(encrypt(b"x", signing_key(Alg::Es256).public_jwk()).is_err());
    assert_eq!(JweError::Failed.dci_code(), "err.encryption.invalid");
}

// ---- property tests ------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        "[a-z]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..5)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn envelope() -> impl Strategy<Value = (Value, Value)> {
    (json_value(), json_value()).prop_map(|(extra, message)| {
        let mut header = json!({"message_id": "m", "action": "search", "sender_id": SENDER});
        header["meta"] = extra;
        (header, message)
    })
}

/// `text` with byte `index` replaced by the ASCII byte `with` (when it differs).
fn flip(text: &str, index: usize, with: u8) -> Option<String> {
    let mut bytes = text.as_bytes().to_vec();
    let slot = bytes.get_mut(index % text.len().max(1))?;
    if *slot == with {
        return None;
    }
    *slot = with;
    String::from_utf8(bytes).ok()
}

fn profile_and_alg() -> impl Strategy<Value = (SignatureProfile, Alg)> {
    (
        prop::sample::select(PROFILES.to_vec()),
        prop::sample::select(Alg::SIGNING.to_vec()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn flipping_any_byte_of_the_signature_header_or_message_fails_verification(
        (header, message) in envelope(),
        (profile, alg) in profile_and_alg(),
        index in any::<usize>(),
        with in 0u8..0x80,
        part in 0u8..3,
    ) {
        let keys = partner_keys();
        let signature = sign(profile, alg, &header, &message);
        prop_assert!(verify_at(profile, Some(&signature), &header, &message, &keys, NOW).is_ok());
        let (mut h, mut m, mut s) = (header.clone(), message.clone(), signature.clone());
        match part {
            0 => {
                let flipped = flip(&signature, index, with);
                prop_assume!(flipped.is_some());
                s = flipped.unwrap_or_default();
            }
            _ => {
                let target = if part == 1 { &header } else { &message };
                let text = String::from_utf8(canonical_json(target)).unwrap();
                let changed: Option<Value> = flip(&text, index, with)
                    .and_then(|t| serde_json::from_str(&t).ok());
                // Only real changes count: `\u00e9` → `\u00E9` is the same value.
                prop_assume!(changed.as_ref().is_some_and(|c| c != target));
                let changed = changed.unwrap_or_default();
                if part == 1 { h = changed } else { m = changed }
            }
        }
        let result = verify_at(profile, Some(&s), &h, &m, &keys, NOW);
        prop_assert!(
            matches!(result, Err(VerifyError::Invalid { .. }) | Err(VerifyError::Missing)),
            "accepted after a flip: {s}"
        );
    }

    #[test]
    fn the_signature_parsers_never_panic(text in any::<String>(), (header, message) in envelope()) {
        let _ = DciSignature::parse(&text);
        let keys = partner_keys();
        for profile in [SignatureProfile::Jws, SignatureProfile::DciSignature, SignatureProfile::None] {
            prop_assert!(verify_at(profile, Some(&text), &header, &message, &keys, NOW).is_err()
                || text.trim().is_empty() && profile == SignatureProfile::None);
        }
    }

    #[test]
    fn near_valid_signature_strings_never_panic_the_parsers(
        (profile, alg) in profile_and_alg(),
        cut in any::<usize>(),
        insert in any::<String>(),
    ) {
        let (header, message) = sample_envelope();
        let signature = sign(profile, alg, &header, &message);
        let mut at_char = cut % (signature.len() + 1);
        while !signature.is_char_boundary(at_char) { at_char -= 1; }
        let mangled = format!("{}{insert}{}", &signature[..at_char], &signature[at_char..]);
        let _ = DciSignature::parse(&mangled);
        let _ = verify_at(profile, Some(&mangled), &header, &message, &partner_keys(), NOW);
        let truncated = &signature[..at_char];
        let _ = DciSignature::parse(truncated);
        let _ = verify_at(profile, Some(truncated), &header, &message, &partner_keys(), NOW);
    }

    #[test]
    fn the_encrypted_message_parser_never_panics(value in json_value(), text in any::<String>()) {
        for candidate in [value, serde_json::from_str(&text).unwrap_or(Value::Null)] {
            if let Ok(message) = EncryptedMessage::from_value(&candidate) {
                let _ = decrypt(&message, &keys().store);
            }
            let _ = decrypt_json(&candidate, &keys().store);
        }
    }

    #[test]
    fn mangled_encrypted_messages_never_panic_and_never_decrypt(
        field in 0usize..8,
        replacement in prop_oneof![any::<String>(), "[A-Za-z0-9_-]{0,90}"],
        rsa in any::<bool>(),
    ) {
        let alg = if rsa { Alg::RsaOaep256 } else { Alg::EcdhEsA256kw };
        let mut value = encrypt(b"{\"ok\":true}", &enc_jwk(alg)).unwrap().to_value();
        let slot = match field {
            0 => &mut value["ciphertext"],
            1 => &mut value["encrypted_key"],
            2 => &mut value["tag"],
            3 => &mut value["iv"],
            4 => &mut value["header"]["alg"],
            5 => &mut value["header"]["kid"],
            6 => &mut value["header"]["enc"],
            _ => &mut value["header"]["epk"]["x"],
        };
        let changed = *slot != json!(replacement);
        *slot = json!(replacement);
        let result = decrypt_json(&value, &keys().store);
        if changed {
            prop_assert!(result.is_err(), "field {field} changed yet it decrypted");
        }
    }

    #[test]
    fn encrypt_then_decrypt_round_trips(plaintext in prop::collection::vec(any::<u8>(), 0..2048), rsa in any::<bool>()) {
        let alg = if rsa { Alg::RsaOaep256 } else { Alg::EcdhEsA256kw };
        let message = encrypt(&plaintext, &enc_jwk(alg)).unwrap();
        let received = EncryptedMessage::from_value(&serde_json::from_str(&serde_json::to_string(&message.to_value()).unwrap()).unwrap()).unwrap();
        prop_assert_eq!(decrypt(&received, &keys().store).unwrap(), plaintext);
    }
}

// ---- key files, the keys CLI and serve -----------------------------------------------------

#[cfg(unix)]
#[test]
fn key_files_readable_by_others_are_refused_naming_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let mut store = KeyStore::open_or_create_dir(&keys_dir).unwrap();
    let info = store.generate(Alg::EdDsa, at(NOW)).unwrap();
    assert_eq!(
        std::fs::metadata(&info.path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&info.path, std::fs::Permissions::from_mode(mode)).unwrap();
        let error = KeyStore::open(&keys_dir).unwrap_err();
        assert!(matches!(error, KeyError::Permissions { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(info.path.file_name().unwrap().to_str().unwrap())
                && message.contains(&format!("{mode:04o}")),
            "{message}"
        );
    }
    std::fs::set_permissions(&info.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    KeyStore::open(&keys_dir).unwrap();
    // A renamed key file (kid not its own) is refused too.
    let renamed = keys_dir.join(
        info.path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace(&info.kid, "AAAA"),
    );
    std::fs::rename(&info.path, &renamed).unwrap();
    assert!(matches!(
        KeyStore::open(&keys_dir).unwrap_err(),
        KeyError::KidMismatch { .. }
    ));
}

/// The real binary, in a temporary folder (the pattern of tests/it/cli.rs).
struct Binary {
    dir: tempfile::TempDir,
}

impl Binary {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn keys_dir(&self) -> PathBuf {
        self.dir.path().join("nsr-data/keys")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nsr"));
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("NSR_")) {
            command.env_remove(key);
        }
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("NSR_REGISTERS_DIR", crate::support::specs_dir())
            .env("NSR_MAPPINGS_DIR", crate::support::mappings_dir())
            .env("NSR_LOG_FILTER", "warn");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "nsr {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

#[test]
fn keys_generate_rotate_and_list_and_a_message_signed_before_a_rotation_still_verifies() {
    let nsr = Binary::new();
    assert!(nsr.ok(&["keys", "list"]).contains("no keys"));
    let generated = nsr.ok(&["keys", "generate", "--alg", "ES256", "--use", "sig"]);
    assert!(generated.contains("generated ES256 sig key"), "{generated}");
    nsr.ok(&["keys", "generate", "--alg", "ECDH-ES+A256KW"]);
    // A mismatched use and an unknown algorithm are refused.
    assert!(
        !nsr.run(&["keys", "generate", "--alg", "EdDSA", "--use", "enc"])
            .status
            .success()
    );
    assert!(
        !nsr.run(&["keys", "generate", "--alg", "none"])
            .status
            .success()
    );

    let before = KeyStore::open(&nsr.keys_dir()).unwrap();
    let old_key = before.signing_key().unwrap();
    let (header, message) = sample_envelope();
    let signed_before: Vec<(SignatureProfile, String)> = PROFILES
        .into_iter()
        .map(|p| {
            let s = sign_envelope(
                p,
                old_key,
                SENDER,
                &header,
                &message,
                at(NOW),
                Duration::seconds(300),
            );
            (p, s.unwrap())
        })
        .collect();

    let rotated = nsr.ok(&["keys", "rotate"]);
    assert!(rotated.contains(old_key.kid()), "{rotated}");
    let listed = nsr.ok(&["keys", "list"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 4, "{listed}");
    let old_line = lines.iter().find(|l| l.contains(old_key.kid())).unwrap();
    assert!(
        old_line.contains("ES256") && old_line.ends_with("retired"),
        "{listed}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.ends_with("active")).count(),
        2,
        "{listed}"
    );
    assert!(!listed.contains("BEGIN") && !listed.contains("\"d\""));
    let json: Value = serde_json::from_str(&nsr.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);

    // A partner holding our new JWKS still verifies what the old key signed.
    let after = KeyStore::open(&nsr.keys_dir()).unwrap();
    assert_ne!(after.signing_key().unwrap().kid(), old_key.kid());
    assert_eq!(after.signing_key().unwrap().alg(), Alg::Es256);
    let jwks = after.jwks();
    assert_eq!(jwks.keys.len(), 3);
    for (profile, signature) in &signed_before {
        verify_at(
            *profile,
            Some(signature),
            &header,
            &message,
            &jwks.keys,
            NOW + 10,
        )
        .unwrap();
    }
    let rotated_enc = nsr.ok(&["keys", "rotate", "--use", "enc"]);
    assert!(rotated_enc.contains("ECDH-ES+A256KW"), "{rotated_enc}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let file = after.list()[0].path.clone();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let output = nsr.run(&["keys", "list"]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(file.file_name().unwrap().to_str().unwrap()) && stderr.contains("0644"),
            "{stderr}"
        );
    }
}

fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_on_a_fresh_machine_creates_its_keys_and_publishes_them() {
    let nsr = Binary::new();
    assert!(!nsr.keys_dir().exists());
    let mut child = nsr
        .command(&["serve", "--no-sample"])
        .env("NSR_LISTEN", "127.0.0.1:0")
        .env("NSR_LOG_FILTER", "info")
        .env("NSR_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut logged = Vec::new();
    let address = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("nsr serve exited before listening: {logged:?}")
        };
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["fields"]["message"] == "nsr serving" {
            break event["fields"]["address"].as_str().unwrap().to_owned();
        }
        logged.push(line);
    };
    let (status, body) = http_get(&address, "/.well-known/jwks.json");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
    let jwks: Value = serde_json::from_str(&body).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 2, "{body}");
    assert!(
        algs.contains(&"EdDSA") && algs.contains(&"ECDH-ES+A256KW"),
        "{body}"
    );
    let store = KeyStore::open(&nsr.keys_dir()).unwrap();
    for key in keys {
        let kid = key["kid"].as_str().unwrap();
        assert!(key.get("d").is_none(), "{key}");
        // The kids were logged; the keys were not.
        assert!(logged.iter().any(|l| l.contains(kid)), "{logged:?}");
        assert!(store.list().iter().any(|k| k.kid == kid));
    }
    let private = std::fs::read(&store.list()[0].path).unwrap();
    let encoded = STANDARD.encode(&private);
    assert!(logged.iter().all(|l| !l.contains(&encoded[20..40])));
}

#[test]
fn serve_refuses_an_existing_keys_directory_without_a_signing_key() {
    let nsr = Binary::new();
    nsr.ok(&["keys", "generate", "--alg", "RSA-OAEP-256"]);
    let output = nsr
        .command(&["serve", "--no-sample"])
        .env("NSR_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no signing key") && stderr.contains("nsr keys generate"),
        "{stderr}"
    );
    // Nothing was created behind the operator's back.
    assert_eq!(KeyStore::open(&nsr.keys_dir()).unwrap().list().len(), 1);
    assert!(!nsr.dir.path().join("nsr-data/nsr.sqlite3").exists());
}
