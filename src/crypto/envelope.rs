//! Signatures over DCI envelopes `{signature, header, message}`.
//!
//! Both profiles sign the same bytes: the canonical JSON ([`super::canonical`]) of
//! `{"header": header, "message": message}` ([`signing_input`]). An absent `message` is signed
//! as `null`. When the message is encrypted, `message` is the `EncryptedMessage` object as sent,
//! so the signature covers the ciphertext and is checked before anything is decrypted
//! (`docs/message-security.md` §6).
//!
//! - [`SignatureProfile::Jws`]: a detached JWS (RFC 7515 appendix F) in compact form,
//!   `BASE64URL(protected)..BASE64URL(signature)`. Protected header (canonical JSON, so keys in
//!   the order `alg, exp, iat, kid`): `alg`, `kid`, `iat` (created, Unix seconds) and `exp`
//!   (expires, Unix seconds). Signing input: `ASCII(BASE64URL(protected) || '.' ||
//!   BASE64URL(canonical bytes))`.
//! - [`SignatureProfile::DciSignature`]: the HTTP-Signature-like string of the DCI spec example,
//!   laid out exactly as OpenSPP2 writes it: `namespace="dci", kidId="<sender_id>|<kid>|<alg>",
//!   algorithm="<alg>", created="<unix>", expires="<unix>", headers="(created) (expires)
//!   digest", signature="<base64>"`, where the signed string is
//!   `"(created): <t>\n(expires): <t>\ndigest: <Base64(SHA-256(canonical bytes))>"` and both
//!   base64 values are standard base64 with padding.
//! - [`SignatureProfile::None`]: for partners explicitly registered as unsigned. We never send
//!   unsigned envelopes: [`sign_envelope`] refuses this profile.

use super::keys::{Alg, KeyUse, PublicJwk, SigningKey};
use super::{b64std, b64std_decode, b64url, b64url_decode, canonical, sha256};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// Clock skew tolerated on `created` and `expires` by default: 60 s (OpenSPP2 uses the same).
pub const DEFAULT_SKEW: Duration = Duration::seconds(60);
/// Validity of our signatures by default: 300 s (OpenSPP2 uses the same).
pub const DEFAULT_VALIDITY: Duration = Duration::seconds(300);
/// Longest signature string accepted; an RSA-8192 JWS is under 1.5 KB.
const MAX_SIGNATURE_LEN: usize = 8 * 1024;

/// How a partner signs its envelopes (agreed per partner at onboarding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureProfile {
    /// Detached JWS.
    Jws,
    /// The DCI / OpenSPP2 signature string.
    DciSignature,
    /// No signature required (only for partners registered that way).
    None,
}

impl SignatureProfile {
    /// `jws`, `dci-signature` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureProfile::Jws => "jws",
            SignatureProfile::DciSignature => "dci-signature",
            SignatureProfile::None => "none",
        }
    }
}

impl fmt::Display for SignatureProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for SignatureProfile {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "jws" => Ok(SignatureProfile::Jws),
            "dci-signature" => Ok(SignatureProfile::DciSignature),
            "none" => Ok(SignatureProfile::None),
            _ => Err(format!(
                "`{text}` is not a signature profile (jws, dci-signature, none)"
            )),
        }
    }
}

/// Why an envelope could not be signed. Signing never falls back to sending unsigned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the `none` profile cannot sign: nsr never sends an unsigned envelope")]
    Unsigned,
    #[error("the signature validity must be at least one second")]
    Validity,
    #[error("the sender id must be printable ASCII without `\"`")]
    SenderId,
    #[error("the signing key failed: {0}")]
    Key(String),
}

/// Why a partner's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No signature where one is required: DCI `err.signature.missing`.
    #[error("the envelope has no signature")]
    Missing,
    /// A signature that does not verify, or does not meet the policy: DCI
    /// `err.signature.invalid`. The reason is for logs; it holds no secrets but is not meant
    /// for the partner.
    #[error("invalid signature: {reason}")]
    Invalid { reason: String },
}

impl VerifyError {
    /// The DCI ack error code (`Error.code` in the spec).
    pub fn dci_code(&self) -> &'static str {
        match self {
            VerifyError::Missing => "err.signature.missing",
            VerifyError::Invalid { .. } => "err.signature.invalid",
        }
    }
}

fn invalid(reason: impl Into<String>) -> VerifyError {
    VerifyError::Invalid {
        reason: reason.into(),
    }
}

/// What a partner's signature may use.
#[derive(Debug, Clone, Copy)]
pub struct VerifyPolicy<'a> {
    /// The algorithms allowed for this partner; anything else is refused, whatever the key.
    pub allowed_algs: &'a [Alg],
    /// Clock skew tolerated on `created` (in the future) and `expires` (in the past).
    pub skew: Duration,
}

impl Default for VerifyPolicy<'_> {
    /// EdDSA, ES256 and RS256, with [`DEFAULT_SKEW`].
    fn default() -> Self {
        Self {
            allowed_algs: &Alg::SIGNING,
            skew: DEFAULT_SKEW,
        }
    }
}

/// A signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The profile it was checked under (`None` when nothing was signed).
    pub profile: SignatureProfile,
    /// Whether a signature was checked; `false` only for an unsigned envelope accepted under
    /// [`SignatureProfile::None`].
    pub signed: bool,
    /// The partner key that verified it.
    pub kid: Option<String>,
    pub alg: Option<Alg>,
    /// When it was signed and until when it is valid (replay windows start here).
    pub created: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    /// The sender named in a DCI signature's `kidId` (checked against `header.sender_id`).
    pub sender_id: Option<String>,
}

/// The bytes both profiles sign: canonical JSON of `{"header": header, "message": message}`.
pub fn signing_input(header: &Value, message: &Value) -> Vec<u8> {
    // Written directly rather than building the object, to avoid cloning the message; "header"
    // sorts before "message", so this is the canonical form of the two-key object.
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"header\":");
    canonical::write_canonical(header, &mut out);
    out.extend_from_slice(b",\"message\":");
    canonical::write_canonical(message, &mut out);
    out.push(b'}');
    out
}

/// Signs an envelope with our `key` under `profile`, valid from `now` for `validity`
/// (whole seconds). `sender_id` is our DCI sender id (it goes into the DCI `kidId`).
pub fn sign_envelope(
    profile: SignatureProfile,
    key: &SigningKey,
    sender_id: &str,
    header: &Value,
    message: &Value,
    now: DateTime<Utc>,
    validity: Duration,
) -> Result<String, SignError> {
    sign_input(
        profile,
        key,
        sender_id,
        &signing_input(header, message),
        now,
        validity,
    )
}

/// A whole signed envelope as the bytes to send: `{"signature": …, "header": …, "message": …}`
/// with header and message in their canonical form, the very bytes the signature covers.
/// Signing and sending then serialise the message once (a page of 100 records is about
/// 100 KB of JSON), and what a partner receives is what was signed.
pub fn seal_envelope(
    profile: SignatureProfile,
    key: &SigningKey,
    sender_id: &str,
    header: &Value,
    message: &Value,
    now: DateTime<Utc>,
    validity: Duration,
) -> Result<Vec<u8>, SignError> {
    let input = signing_input(header, message);
    let signature = sign_input(profile, key, sender_id, &input, now, validity)?;
    // `input` is the object `{"header":…,"message":…}`: the signature goes in front of its
    // first member.
    let mut body = Vec::with_capacity(input.len() + signature.len() + 16);
    body.extend_from_slice(b"{\"signature\":");
    canonical::write_canonical(&Value::String(signature), &mut body);
    body.push(b',');
    body.extend_from_slice(input.get(1..).unwrap_or_default());
    Ok(body)
}

/// Signs the canonical `{header, message}` bytes `input` under `profile`.
fn sign_input(
    profile: SignatureProfile,
    key: &SigningKey,
    sender_id: &str,
    input: &[u8],
    now: DateTime<Utc>,
    validity: Duration,
) -> Result<String, SignError> {
    if validity.num_seconds() < 1 {
        return Err(SignError::Validity);
    }
    let created = now.timestamp();
    let expires = created.saturating_add(validity.num_seconds());
    match profile {
        SignatureProfile::None => Err(SignError::Unsigned),
        SignatureProfile::Jws => {
            let protected = serde_json::json!({
                "alg": key.alg().as_str(),
                "kid": key.kid(),
                "iat": created,
                "exp": expires,
            });
            let mut signing = b64url(&canonical::canonical_json(&protected));
            let protected_len = signing.len();
            signing.push('.');
            signing.push_str(&b64url(input));
            let signature = key.sign(signing.as_bytes()).map_err(SignError::Key)?;
            signing.truncate(protected_len);
            signing.push_str("..");
            signing.push_str(&b64url(&signature));
            Ok(signing)
        }
        SignatureProfile::DciSignature => {
            if sender_id.is_empty()
                || !sender_id
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"')
            {
                return Err(SignError::SenderId);
            }
            let digest = b64std(&sha256(input));
            let signed = dci_signing_string(created, expires, &digest);
            let signature = key.sign(signed.as_bytes()).map_err(SignError::Key)?;
            let value = DciSignature {
                namespace: Some("dci".to_owned()),
                sender_id: sender_id.to_owned(),
                kid: key.kid().to_owned(),
                algorithm: dci_alg_name(key.alg()).to_owned(),
                created,
                expires,
                headers: Some(DCI_HEADERS.to_owned()),
                signature,
            };
            Ok(value.to_string())
        }
    }
}

/// Verifies a partner's envelope signature.
///
/// `partner_keys` are the keys registered for this partner (never a key or URL taken from the
/// message: `jwk`, `jku`, `x5u` and `x5c` are refused). The key is chosen by kid among them,
/// its type and curve must fit the signature's algorithm, and the algorithm must be in
/// `policy.allowed_algs` (`none` never is). `created` may be at most `policy.skew` in the
/// future and `expires` at most `policy.skew` in the past.
///
/// Under [`SignatureProfile::None`] an unsigned envelope is accepted; a signature that is
/// present anyway is still checked (profile recognised by its shape), so a bad one is refused.
pub fn verify_envelope(
    profile: SignatureProfile,
    signature: Option<&str>,
    header: &Value,
    message: &Value,
    partner_keys: &[PublicJwk],
    policy: &VerifyPolicy<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    let signature = signature.map(str::trim).filter(|s| !s.is_empty());
    let profile = match (profile, signature) {
        (SignatureProfile::None, None) => {
            return Ok(Verified {
                profile: SignatureProfile::None,
                signed: false,
                kid: None,
                alg: None,
                created: None,
                expires: None,
                sender_id: None,
            });
        }
        (_, None) => return Err(VerifyError::Missing),
        (SignatureProfile::None, Some(text)) => {
            if text.contains("..") && !text.contains('"') {
                SignatureProfile::Jws
            } else {
                SignatureProfile::DciSignature
            }
        }
        (profile, Some(_)) => profile,
    };
    let signature = signature.unwrap_or_default();
    if signature.len() > MAX_SIGNATURE_LEN {
        return Err(invalid("signature too long"));
    }
    match profile {
        SignatureProfile::Jws => verify_jws(signature, header, message, partner_keys, policy, now),
        _ => verify_dci(signature, header, message, partner_keys, policy, now),
    }
}

/// Finds the partner key for `kid` that fits `alg`. Without a kid, a partner with exactly one
/// key that fits `alg` is unambiguous.
fn find_key<'k>(
    partner_keys: &'k [PublicJwk],
    kid: Option<&str>,
    alg: Alg,
) -> Result<&'k PublicJwk, VerifyError> {
    match kid {
        Some(kid) => partner_keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .find(|k| k.fits(alg))
            .ok_or_else(|| invalid(format!("no registered {alg} key with kid `{kid}`"))),
        None => {
            let mut fitting = partner_keys.iter().filter(|k| k.fits(alg));
            match (fitting.next(), fitting.next()) {
                (Some(key), None) => Ok(key),
                _ => Err(invalid("no kid, and no single registered key fits")),
            }
        }
    }
}

fn check_alg(alg: Alg, policy: &VerifyPolicy<'_>) -> Result<(), VerifyError> {
    if alg.key_use() != KeyUse::Sig || !policy.allowed_algs.contains(&alg) {
        return Err(invalid(format!("algorithm {alg} is not allowed")));
    }
    Ok(())
}

/// Checks `created`/`expires` (Unix seconds) against `now` with the policy's skew.
fn check_window(
    created: i64,
    expires: i64,
    now: DateTime<Utc>,
    skew: Duration,
) -> Result<(DateTime<Utc>, DateTime<Utc>), VerifyError> {
    let (Some(created_at), Some(expires_at)) = (
        DateTime::from_timestamp(created, 0),
        DateTime::from_timestamp(expires, 0),
    ) else {
        return Err(invalid("created or expires out of range"));
    };
    if expires_at < created_at {
        return Err(invalid("expires before created"));
    }
    if created_at > now + skew {
        return Err(invalid("created in the future"));
    }
    if expires_at + skew < now {
        return Err(invalid("expired"));
    }
    Ok((created_at, expires_at))
}

/// Header parameters that would bring a key or a key URL from the message itself.
const KEY_CARRYING: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];
/// Header parameters this profile understands, so they may appear in `crit`.
const UNDERSTOOD_CRIT: [&str; 2] = ["iat", "exp"];

/// A compact JWS split into its parts, with the protected header read and checked.
struct ParsedJws<'a> {
    protected_b64: &'a str,
    payload_b64: &'a str,
    protected: serde_json::Map<String, Value>,
    alg: Alg,
    signature: Vec<u8>,
}

/// Splits and checks a compact JWS: three parts; a JSON-object protected header whose `alg`
/// is an allowed signature algorithm (so never `none`); no key-carrying parameters; `b64`
/// absent or true; every `crit` name understood and present.
fn parse_jws<'a>(jws: &'a str, allowed_algs: &[Alg]) -> Result<ParsedJws<'a>, VerifyError> {
    if jws.len() > MAX_SIGNATURE_LEN {
        return Err(invalid("signature too long"));
    }
    let mut parts = jws.split('.');
    let (Some(protected_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a compact JWS (three dot-separated parts)"));
    };
    let protected_bytes =
        b64url_decode(protected_b64).ok_or_else(|| invalid("protected header is not base64url"))?;
    let protected: serde_json::Map<String, Value> = serde_json::from_slice(&protected_bytes)
        .map_err(|_| invalid("protected header is not a JSON object"))?;
    let alg_name = protected
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("protected header has no `alg`"))?;
    let alg: Alg = alg_name
        .parse()
        .map_err(|_| invalid(format!("algorithm `{alg_name}` is not accepted")))?;
    if alg.key_use() != KeyUse::Sig || !allowed_algs.contains(&alg) {
        return Err(invalid(format!("algorithm {alg} is not allowed")));
    }
    if let Some(name) = KEY_CARRYING.iter().find(|n| protected.contains_key(**n)) {
        return Err(invalid(format!(
            "`{name}` in the header is never honoured; keys come from the partner registry"
        )));
    }
    match protected.get("b64") {
        None | Some(Value::Bool(true)) => {}
        Some(_) => return Err(invalid("unencoded payload (b64) is not supported")),
    }
    if let Some(crit) = protected.get("crit") {
        let names = crit
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| invalid("`crit` must be a non-empty array"))?;
        for name in names {
            match name.as_str() {
                Some(n) if UNDERSTOOD_CRIT.contains(&n) && protected.contains_key(n) => {}
                _ => return Err(invalid(format!("unsupported critical header {name}"))),
            }
        }
    }
    let signature =
        b64url_decode(signature_b64).ok_or_else(|| invalid("signature is not base64url"))?;
    Ok(ParsedJws {
        protected_b64,
        payload_b64,
        protected,
        alg,
        signature,
    })
}

fn jws_kid(protected: &serde_json::Map<String, Value>) -> Result<Option<&str>, VerifyError> {
    match protected.get("kid") {
        None => Ok(None),
        Some(Value::String(kid)) => Ok(Some(kid.as_str())),
        Some(_) => Err(invalid("`kid` must be a string")),
    }
}

/// Checks a parsed JWS's signature under `key` over `BASE64URL(protected) || '.' ||
/// BASE64URL(payload)`.
fn check_jws_signature(
    parsed: &ParsedJws<'_>,
    payload: &[u8],
    key: &PublicJwk,
) -> Result<(), VerifyError> {
    let verifier = key.verifying_key(parsed.alg).map_err(invalid)?;
    let mut signed =
        String::with_capacity(parsed.protected_b64.len() + 1 + payload.len() * 4 / 3 + 4);
    signed.push_str(parsed.protected_b64);
    signed.push('.');
    signed.push_str(&b64url(payload));
    if verifier.verify(signed.as_bytes(), &parsed.signature) {
        Ok(())
    } else {
        Err(invalid("signature does not verify"))
    }
}

/// Verifies a compact JWS under one known key (no time checks: a plain RFC 7515 check).
/// With `detached_payload` the JWS must be detached (empty payload part, RFC 7515 appendix F)
/// and is checked against those bytes; without it, the attached payload is checked and
/// returned. Returns the protected header and the payload.
pub fn verify_jws_compact(
    jws: &str,
    detached_payload: Option<&[u8]>,
    key: &PublicJwk,
    allowed_algs: &[Alg],
) -> Result<(serde_json::Map<String, Value>, Vec<u8>), VerifyError> {
    let parsed = parse_jws(jws, allowed_algs)?;
    let payload = match (detached_payload, parsed.payload_b64.is_empty()) {
        (Some(payload), true) => payload.to_vec(),
        (None, false) => {
            b64url_decode(parsed.payload_b64).ok_or_else(|| invalid("payload is not base64url"))?
        }
        (Some(_), false) => return Err(invalid("expected a detached JWS (empty payload part)")),
        (None, true) => return Err(invalid("detached JWS without its payload")),
    };
    if let Some(kid) = jws_kid(&parsed.protected)?
        && key.kid.as_deref().is_some_and(|k| k != kid)
    {
        return Err(invalid("the JWS names another key"));
    }
    check_jws_signature(&parsed, &payload, key)?;
    Ok((parsed.protected, payload))
}

fn verify_jws(
    signature: &str,
    header: &Value,
    message: &Value,
    partner_keys: &[PublicJwk],
    policy: &VerifyPolicy<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    let parsed = parse_jws(signature, policy.allowed_algs)?;
    if !parsed.payload_b64.is_empty() {
        return Err(invalid("expected a detached JWS (empty payload part)"));
    }
    let time = |name: &str| {
        parsed
            .protected
            .get(name)
            .and_then(Value::as_i64)
            .ok_or_else(|| invalid(format!("protected header needs an integer `{name}`")))
    };
    let (created, expires) = check_window(time("iat")?, time("exp")?, now, policy.skew)?;
    let key = find_key(partner_keys, jws_kid(&parsed.protected)?, parsed.alg)?;
    check_jws_signature(&parsed, &signing_input(header, message), key)?;
    Ok(Verified {
        profile: SignatureProfile::Jws,
        signed: true,
        kid: key.kid.clone(),
        alg: Some(parsed.alg),
        created: Some(created),
        expires: Some(expires),
        sender_id: None,
    })
}

/// The only `headers` list this profile signs.
const DCI_HEADERS: &str = "(created) (expires) digest";
/// Namespaces seen in the DCI spec example (`spdci`), OpenSPP2 (`dci`) and G2P Connect (`g2p`).
const DCI_NAMESPACES: [&str; 3] = ["dci", "spdci", "g2p"];

/// The string the DCI profile signs (OpenSPP2 layout): three lines joined by `\n`, no trailing
/// newline, times in decimal.
fn dci_signing_string(created: i64, expires: i64, digest: &str) -> String {
    format!("(created): {created}\n(expires): {expires}\ndigest: {digest}")
}

/// Our `algorithm` names in the DCI string: `ed25519` as in the DCI spec example and OpenSPP2;
/// the JOSE names for the others (ECDSA signatures are r || s as in JWS).
fn dci_alg_name(alg: Alg) -> &'static str {
    match alg {
        Alg::EdDsa => "ed25519",
        other => other.as_str(),
    }
}

/// Reads a DCI `algorithm` (or `kidId` algorithm) name. Exact spellings only, so the string
/// has one form per meaning.
fn parse_dci_alg(name: &str) -> Option<Alg> {
    match name {
        "ed25519" | "EdDSA" => Some(Alg::EdDsa),
        "ES256" => Some(Alg::Es256),
        "RS256" | "rsa-sha256" => Some(Alg::Rs256),
        _ => None,
    }
}

/// A parsed DCI signature string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DciSignature {
    pub namespace: Option<String>,
    pub sender_id: String,
    pub kid: String,
    /// The `algorithm` parameter as written (e.g. `ed25519`).
    pub algorithm: String,
    pub created: i64,
    pub expires: i64,
    pub headers: Option<String>,
    pub signature: Vec<u8>,
}

impl fmt::Display for DciSignature {
    /// The OpenSPP2 layout: `name="value"` pairs joined by `, `, in this order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(namespace) = &self.namespace {
            write!(f, "namespace=\"{namespace}\", ")?;
        }
        write!(
            f,
            "kidId=\"{}|{}|{}\", algorithm=\"{}\", created=\"{}\", expires=\"{}\", ",
            self.sender_id, self.kid, self.algorithm, self.algorithm, self.created, self.expires
        )?;
        if let Some(headers) = &self.headers {
            write!(f, "headers=\"{headers}\", ")?;
        }
        write!(f, "signature=\"{}\"", b64std(&self.signature))
    }
}

impl DciSignature {
    /// Parses a DCI signature string. Never panics; refuses anything it does not fully
    /// understand:
    ///
    /// - an optional `Signature:` label, then `name=value` parameters separated by `,` and
    ///   optionally one space; values quoted (`"…"`, no escapes) or bare tokens;
    /// - names exactly `namespace`, `kidId` (or `keyId`), `algorithm`, `created`, `expires`,
    ///   `headers`, `signature`, each at most once; anything else is refused, since only
    ///   `created`, `expires` and the digest are signed and an unknown parameter could change
    ///   meaning unnoticed;
    /// - `kidId` = `sender|kid|alg`; `created`/`expires` decimal Unix seconds; `signature`
    ///   standard base64 with padding; `headers`, when present, exactly `(created) (expires)
    ///   digest`; `namespace`, when present, `dci`, `spdci` or `g2p`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_SIGNATURE_LEN {
            return Err("signature too long".to_owned());
        }
        let mut rest = text.trim();
        if let Some(after) = rest.strip_prefix("Signature:") {
            rest = after.trim_start_matches(' ');
        }
        let mut params: Vec<(&str, &str)> = Vec::new();
        loop {
            let name_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
            let (name, after) = rest.split_at(name_len);
            if name.is_empty() {
                return Err("expected a parameter name".to_owned());
            }
            let after = after
                .strip_prefix('=')
                .ok_or_else(|| format!("expected `=` after `{name}`"))?;
            let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted
                    .find('"')
                    .ok_or_else(|| format!("unterminated value of `{name}`"))?;
                let (value, tail) = quoted.split_at(end);
                (value, tail.get(1..).unwrap_or_default())
            } else {
                let len = after
                    .bytes()
                    .take_while(|b| !matches!(b, b',' | b' ' | b'"'))
                    .count();
                after.split_at(len)
            };
            if params.iter().any(|(n, _)| *n == name) {
                return Err(format!("parameter `{name}` given twice"));
            }
            params.push((name, value));
            if after.is_empty() {
                break;
            }
            let after = after
                .strip_prefix(',')
                .ok_or_else(|| format!("expected `,` after the value of `{name}`"))?;
            rest = after.strip_prefix(' ').unwrap_or(after);
        }

        let mut namespace = None;
        let mut kid_id = None;
        let mut algorithm = None;
        let mut created = None;
        let mut expires = None;
        let mut headers = None;
        let mut signature = None;
        for (name, value) in params {
            let slot = match name {
                "namespace" => &mut namespace,
                "kidId" | "keyId" => &mut kid_id,
                "algorithm" => &mut algorithm,
                "created" => &mut created,
                "expires" => &mut expires,
                "headers" => &mut headers,
                "signature" => &mut signature,
                other => return Err(format!("unknown parameter `{other}`")),
            };
            if slot.is_some() {
                return Err("`kidId` and `keyId` both given".to_owned());
            }
            *slot = Some(value);
        }
        if let Some(ns) = namespace
            && !DCI_NAMESPACES.contains(&ns)
        {
            return Err(format!("unknown namespace `{ns}`"));
        }
        if let Some(h) = headers
            && h != DCI_HEADERS
        {
            return Err(format!("`headers` must be `{DCI_HEADERS}`"));
        }
        let kid_id = kid_id.ok_or("no `kidId`")?;
        let mut pieces = kid_id.rsplitn(3, '|');
        let (Some(kid_alg), Some(kid), Some(sender_id)) =
            (pieces.next(), pieces.next(), pieces.next())
        else {
            return Err("`kidId` must be `sender|kid|algorithm`".to_owned());
        };
        if kid.is_empty() || sender_id.is_empty() {
            return Err("`kidId` has an empty sender or kid".to_owned());
        }
        let algorithm = algorithm.ok_or("no `algorithm`")?;
        let alg =
            parse_dci_alg(algorithm).ok_or_else(|| format!("unknown algorithm `{algorithm}`"))?;
        if parse_dci_alg(kid_alg) != Some(alg) {
            return Err("the algorithm in `kidId` differs from `algorithm`".to_owned());
        }
        let number = |name: &str, value: Option<&str>| -> Result<i64, String> {
            let value = value.ok_or_else(|| format!("no `{name}`"))?;
            if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("`{name}` must be Unix seconds"));
            }
            value
                .parse()
                .map_err(|_| format!("`{name}` must be Unix seconds"))
        };
        let created = number("created", created)?;
        let expires = number("expires", expires)?;
        let signature =
            b64std_decode(signature.ok_or("no `signature`")?).ok_or("`signature` is not base64")?;
        Ok(Self {
            namespace: namespace.map(str::to_owned),
            sender_id: sender_id.to_owned(),
            kid: kid.to_owned(),
            algorithm: algorithm.to_owned(),
            created,
            expires,
            headers: headers.map(str::to_owned),
            signature,
        })
    }
}

fn verify_dci(
    signature: &str,
    header: &Value,
    message: &Value,
    partner_keys: &[PublicJwk],
    policy: &VerifyPolicy<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, VerifyError> {
    let parsed = DciSignature::parse(signature).map_err(invalid)?;
    let alg = parse_dci_alg(&parsed.algorithm)
        .ok_or_else(|| invalid(format!("unknown algorithm `{}`", parsed.algorithm)))?;
    check_alg(alg, policy)?;
    if let Some(sender) = header.get("sender_id").and_then(Value::as_str)
        && sender != parsed.sender_id
    {
        return Err(invalid("the sender in `kidId` is not `header.sender_id`"));
    }
    let (created, expires) = check_window(parsed.created, parsed.expires, now, policy.skew)?;
    let key = find_key(partner_keys, Some(&parsed.kid), alg)?;
    let verifier = key.verifying_key(alg).map_err(invalid)?;
    let digest = b64std(&sha256(&signing_input(header, message)));
    let signed = dci_signing_string(parsed.created, parsed.expires, &digest);
    if !verifier.verify(signed.as_bytes(), &parsed.signature) {
        return Err(invalid("signature does not verify"));
    }
    Ok(Verified {
        profile: SignatureProfile::DciSignature,
        signed: true,
        kid: key.kid.clone(),
        alg: Some(alg),
        created: Some(created),
        expires: Some(expires),
        sender_id: Some(parsed.sender_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_reads_the_openspp2_layout_and_the_spec_example_label() {
        let text = "namespace=\"dci\", kidId=\"spmis-1|key-1|ed25519\", algorithm=\"ed25519\", created=\"1606970629\", expires=\"1606970929\", headers=\"(created) (expires) digest\", signature=\"AAEC\"";
        let parsed = DciSignature::parse(text).unwrap();
        assert_eq!(parsed.sender_id, "spmis-1");
        assert_eq!(parsed.kid, "key-1");
        assert_eq!(parsed.created, 1_606_970_629);
        assert_eq!(parsed.signature, vec![0, 1, 2]);
        assert_eq!(parsed.to_string(), text);
        let labelled = format!("Signature:  {}", text.replace("\"dci\"", "\"spdci\""));
        assert_eq!(
            DciSignature::parse(&labelled).unwrap().namespace.as_deref(),
            Some("spdci")
        );
        // A sender id may itself contain `|`: the kid and algorithm are the last two pieces.
        let piped = text.replace("spmis-1|", "a|b|");
        assert_eq!(DciSignature::parse(&piped).unwrap().sender_id, "a|b");
    }

    #[test]
    fn the_parser_refuses_what_it_does_not_understand() {
        let good = "kidId=\"s|k|ed25519\", algorithm=\"ed25519\", created=\"1\", expires=\"2\", signature=\"AAEC\"";
        assert!(DciSignature::parse(good).is_ok());
        for bad in [
            "",
            "kidId",
            "kidId=\"s|k|ed25519",
            &good.replace("created", "createdd"),
            &good.replace("\"1\"", "\"-1\""),
            &good.replace("\"1\"", "\"1.5\""),
            &good.replace("\"1\"", "\"99999999999999999999\""),
            &good.replace("algorithm=\"ed25519\"", "algorithm=\"Ed25519\""),
            &good.replace("s|k|ed25519", "s|k|RS256"),
            &good.replace("s|k|", "k|"),
            &good.replace("AAEC", "AAF="),
            &good.replace(", ", ",  "),
            &good.replace(", ", ",\t"),
            &format!("{good}, created=\"1\""),
            &format!("namespace=\"xyz\", {good}"),
            &format!("{good}, headers=\"(created) digest\""),
        ] {
            assert!(DciSignature::parse(bad).is_err(), "accepted: {bad}");
        }
    }
}
