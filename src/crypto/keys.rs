//! Our keys: algorithms, private keys, public JWKs, RFC 7638 key ids, and the [`KeyStore`] over
//! a directory of PKCS#8 files.
//!
//! Layout of the keys directory (`keys_dir`, default `nsr-data/keys`): one file per key,
//! `<created>_<use>_<alg>_<kid>.p8`, holding the unencrypted PKCS#8 DER private key, mode 0600.
//! For example `20261121T100000.000000Z_sig_EdDSA_kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k.p8`.
//! The name carries the metadata, so no database or manifest is needed and a file is never
//! out of step with a separate index; the kid in the name is checked against the key on load,
//! so a renamed file is refused. Files are written to a temporary name and renamed into place,
//! so a crash never leaves half a key under a real name.
//!
//! Rotation: the newest `sig` key is the one active signing key; older `sig` keys stay in the
//! directory and in the JWKS, so a partner verifying a message signed just before a rotation
//! still finds the key. Likewise the newest `enc` key is the one partners should encrypt to
//! (the JWKS lists keys newest first), and older `enc` keys still decrypt messages in flight.
//! A retired key is removed by deleting its file once nothing signed or encrypted with it can
//! still arrive.

use super::{b64url, b64url_decode, sha256};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use aws_lc_rs::{agreement, rsa};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The algorithms nsr signs, verifies, encrypts and decrypts with (RFC 7518 / RFC 8037 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    /// Ed25519 signatures (RFC 8037).
    EdDsa,
    /// ECDSA P-256 with SHA-256, signature = r || s, 64 bytes (RFC 7518 §3.4).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA 2048 bits or more (RFC 7518 §3.3).
    Rs256,
    /// ECDH-ES on P-256, Concat KDF, then AES-256 key wrap of the content key (RFC 7518 §4.6).
    EcdhEsA256kw,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 7518 §4.3).
    RsaOaep256,
}

impl Alg {
    /// Every supported algorithm.
    pub const ALL: [Alg; 5] = [
        Alg::EdDsa,
        Alg::Es256,
        Alg::Rs256,
        Alg::EcdhEsA256kw,
        Alg::RsaOaep256,
    ];
    /// The signature algorithms.
    pub const SIGNING: [Alg; 3] = [Alg::EdDsa, Alg::Es256, Alg::Rs256];

    /// The JOSE name (`alg` header value).
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDsa => "EdDSA",
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
            Alg::EcdhEsA256kw => "ECDH-ES+A256KW",
            Alg::RsaOaep256 => "RSA-OAEP-256",
        }
    }

    /// What a key of this algorithm is for.
    pub fn key_use(self) -> KeyUse {
        match self {
            Alg::EdDsa | Alg::Es256 | Alg::Rs256 => KeyUse::Sig,
            Alg::EcdhEsA256kw | Alg::RsaOaep256 => KeyUse::Enc,
        }
    }

    /// The JWK `kty` of its keys.
    pub fn kty(self) -> &'static str {
        match self {
            Alg::EdDsa => "OKP",
            Alg::Es256 | Alg::EcdhEsA256kw => "EC",
            Alg::Rs256 | Alg::RsaOaep256 => "RSA",
        }
    }

    /// The JWK `crv` of its keys, if the key type has curves.
    pub fn crv(self) -> Option<&'static str> {
        match self {
            Alg::EdDsa => Some("Ed25519"),
            Alg::Es256 | Alg::EcdhEsA256kw => Some("P-256"),
            Alg::Rs256 | Alg::RsaOaep256 => None,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = String;

    /// Exact JOSE names only: `none`, `HS256` and every other name are refused.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Alg::ALL
            .into_iter()
            .find(|alg| alg.as_str() == text)
            .ok_or_else(|| {
                format!("`{text}` is not one of EdDSA, ES256, RS256, ECDH-ES+A256KW, RSA-OAEP-256")
            })
    }
}

impl Serialize for Alg {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Alg {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A key's purpose (JWK `use`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyUse {
    /// Signing and verifying.
    Sig,
    /// Encryption and decryption.
    Enc,
}

impl KeyUse {
    /// `sig` or `enc`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUse::Sig => "sig",
            KeyUse::Enc => "enc",
        }
    }
}

impl fmt::Display for KeyUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for KeyUse {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "sig" => Ok(KeyUse::Sig),
            "enc" => Ok(KeyUse::Enc),
            _ => Err(format!("`{text}` is not `sig` or `enc`")),
        }
    }
}

/// A public JWK (RFC 7517): ours as published, or a partner's as registered. Members other
/// than these are ignored when reading (a partner's `x5c` does no harm); private members
/// (`d`, `p`, …) are never read or written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    /// `OKP`, `EC` or `RSA`.
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// A JWK Set (RFC 7517 §5), as served at `/.well-known/jwks.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<PublicJwk>,
}

fn required<'a>(member: &'a Option<String>, name: &str) -> Result<&'a str, String> {
    member
        .as_deref()
        .ok_or_else(|| format!("the JWK has no `{name}`"))
}

impl PublicJwk {
    /// The RFC 7638 thumbprint: BASE64URL(SHA-256 of the JSON object of the required members,
    /// in lexicographic order, no whitespace). nsr uses it as the `kid` of its own keys.
    pub fn thumbprint(&self) -> Result<String, String> {
        // The member values are base64url or fixed names, so plain JSON string quoting is exact;
        // canonical_json sorts the members and writes them without whitespace (RFC 7638 §3.1).
        let members = match self.kty.as_str() {
            "OKP" => serde_json::json!({
                "crv": required(&self.crv, "crv")?,
                "kty": "OKP",
                "x": required(&self.x, "x")?,
            }),
            "EC" => serde_json::json!({
                "crv": required(&self.crv, "crv")?,
                "kty": "EC",
                "x": required(&self.x, "x")?,
                "y": required(&self.y, "y")?,
            }),
            "RSA" => serde_json::json!({
                "e": required(&self.e, "e")?,
                "kty": "RSA",
                "n": required(&self.n, "n")?,
            }),
            other => return Err(format!("unsupported key type `{other}`")),
        };
        Ok(b64url(&sha256(&super::canonical_json(&members))))
    }

    /// Whether this key can be used with `alg`: key type and curve match the algorithm, and the
    /// JWK's own `alg` and `use`, when present, agree. This is what stops algorithm confusion:
    /// a key is only ever used with the one algorithm it was registered for.
    pub fn fits(&self, alg: Alg) -> bool {
        self.kty == alg.kty()
            && self.crv.as_deref() == alg.crv()
            && self.alg.as_deref().is_none_or(|a| a == alg.as_str())
            && self
                .key_use
                .as_deref()
                .is_none_or(|u| u == alg.key_use().as_str())
    }

    /// The key material for verifying `alg` signatures.
    pub(crate) fn verifying_key(&self, alg: Alg) -> Result<VerifyingKey, String> {
        if !self.fits(alg) {
            return Err(format!("the key does not fit {alg}"));
        }
        match alg {
            Alg::EdDsa => {
                let x = decode_fixed(required(&self.x, "x")?, 32, "x")?;
                Ok(VerifyingKey::Ed25519(x))
            }
            Alg::Es256 => Ok(VerifyingKey::Es256(self.ec_point()?)),
            Alg::Rs256 => {
                let (n, e) = self.rsa_components()?;
                Ok(VerifyingKey::Rs256 { n, e })
            }
            Alg::EcdhEsA256kw | Alg::RsaOaep256 => Err(format!("{alg} is not a signature alg")),
        }
    }

    /// Whether `signature` is a valid raw `alg` signature of `message` under this key: the
    /// primitive the envelope profiles are built on (the envelope benchmark compares them).
    pub fn verify_signature(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        self.verifying_key(alg)
            .is_ok_and(|key| key.verify(message, signature))
    }

    /// The uncompressed SEC1 point `04 || x || y` of a P-256 key.
    pub(crate) fn ec_point(&self) -> Result<Vec<u8>, String> {
        if self.kty != "EC" || self.crv.as_deref() != Some("P-256") {
            return Err("not a P-256 key".to_owned());
        }
        let x = decode_fixed(required(&self.x, "x")?, 32, "x")?;
        let y = decode_fixed(required(&self.y, "y")?, 32, "y")?;
        let mut point = Vec::with_capacity(65);
        point.push(4);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        Ok(point)
    }

    /// RSA modulus and exponent, big-endian without leading zeros; the modulus must be 2048
    /// bits or more.
    pub(crate) fn rsa_components(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        if self.kty != "RSA" {
            return Err("not an RSA key".to_owned());
        }
        let n = strip_leading_zeros(
            b64url_decode(required(&self.n, "n")?).ok_or("`n` is not base64url")?,
        );
        let e = strip_leading_zeros(
            b64url_decode(required(&self.e, "e")?).ok_or("`e` is not base64url")?,
        );
        if n.len() < 256 {
            return Err("RSA keys under 2048 bits are refused".to_owned());
        }
        if e.is_empty() || e.len() > 8 {
            return Err("bad RSA exponent".to_owned());
        }
        Ok((n, e))
    }
}

fn decode_fixed(text: &str, len: usize, name: &str) -> Result<Vec<u8>, String> {
    match b64url_decode(text) {
        Some(bytes) if bytes.len() == len => Ok(bytes),
        _ => Err(format!("`{name}` is not {len} bytes of base64url")),
    }
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// Public key material ready to verify one algorithm.
pub(crate) enum VerifyingKey {
    Ed25519(Vec<u8>),
    Es256(Vec<u8>),
    Rs256 { n: Vec<u8>, e: Vec<u8> },
}

impl VerifyingKey {
    /// Whether `signature` is a valid signature of `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            VerifyingKey::Ed25519(x) => sig::UnparsedPublicKey::new(&sig::ED25519, x)
                .verify(message, signature)
                .is_ok(),
            VerifyingKey::Es256(point) => {
                sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            VerifyingKey::Rs256 { n, e } => sig::RsaPublicKeyComponents { n, e }
                .verify(&sig::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }
}

/// Bytes that are wiped (best effort) when dropped: PKCS#8 private keys on their way to or
/// from disk.
struct SecretBytes(Vec<u8>);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

enum SigningInner {
    Ed25519(sig::Ed25519KeyPair),
    Es256(sig::EcdsaKeyPair),
    Rs256(sig::RsaKeyPair),
}

/// One of our private signing keys. `Debug` shows the kid and algorithm only.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    public: PublicJwk,
    inner: SigningInner,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private", &"[redacted]")
            .finish()
    }
}

fn key_rejected(error: impl fmt::Display) -> String {
    format!("not a usable key: {error}")
}

/// The RSA public key of a PKCS#8 RSA private key, as JWK `n` and `e`.
fn rsa_public_jwk(pair: &sig::RsaKeyPair, alg: Alg) -> Result<PublicJwk, String> {
    let (n, e) = parse_rsa_public_key_der(pair.public_key().as_ref())
        .ok_or("cannot read the RSA public key")?;
    Ok(PublicJwk {
        kty: "RSA".to_owned(),
        kid: None,
        key_use: Some(alg.key_use().as_str().to_owned()),
        alg: Some(alg.as_str().to_owned()),
        crv: None,
        x: None,
        y: None,
        n: Some(b64url(strip_leading_zeros(n.to_vec()).as_slice())),
        e: Some(b64url(strip_leading_zeros(e.to_vec()).as_slice())),
    })
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017 A.1.1),
/// DER. Returns the two integers' content octets.
fn parse_rsa_public_key_der(der: &[u8]) -> Option<(&[u8], &[u8])> {
    fn read_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (len_bytes, rest) = rest.split_at(count);
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, rest)
        };
        if rest.len() < len {
            return None;
        }
        Some(rest.split_at(len))
    }
    let (body, trailing) = read_tlv(der, 0x30)?;
    if !trailing.is_empty() {
        return None;
    }
    let (n, rest) = read_tlv(body, 0x02)?;
    let (e, rest) = read_tlv(rest, 0x02)?;
    rest.is_empty().then_some((n, e))
}

fn ec_public_jwk(point: &[u8], alg: Alg) -> Result<PublicJwk, String> {
    // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
    match point {
        [4, coordinates @ ..] if coordinates.len() == 64 => {
            let (x, y) = coordinates.split_at(32);
            Ok(PublicJwk {
                kty: "EC".to_owned(),
                kid: None,
                key_use: Some(alg.key_use().as_str().to_owned()),
                alg: Some(alg.as_str().to_owned()),
                crv: Some("P-256".to_owned()),
                x: Some(b64url(x)),
                y: Some(b64url(y)),
                n: None,
                e: None,
            })
        }
        _ => Err("unexpected EC public key encoding".to_owned()),
    }
}

/// Fills in the kid (the thumbprint) of a freshly built public JWK.
fn with_kid(mut jwk: PublicJwk) -> Result<PublicJwk, String> {
    jwk.kid = Some(jwk.thumbprint()?);
    Ok(jwk)
}

impl SigningKey {
    /// Loads a PKCS#8 DER private key (v1 or v2) for `alg`.
    pub fn from_pkcs8(alg: Alg, der: &[u8]) -> Result<Self, String> {
        let (inner, public) = match alg {
            Alg::EdDsa => {
                let pair =
                    sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(key_rejected)?;
                let public = PublicJwk {
                    kty: "OKP".to_owned(),
                    kid: None,
                    key_use: Some("sig".to_owned()),
                    alg: Some(alg.as_str().to_owned()),
                    crv: Some("Ed25519".to_owned()),
                    x: Some(b64url(pair.public_key().as_ref())),
                    y: None,
                    n: None,
                    e: None,
                };
                (SigningInner::Ed25519(pair), public)
            }
            Alg::Es256 => {
                let pair =
                    sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                        .map_err(key_rejected)?;
                let public = ec_public_jwk(pair.public_key().as_ref(), alg)?;
                (SigningInner::Es256(pair), public)
            }
            Alg::Rs256 => {
                let pair = sig::RsaKeyPair::from_pkcs8(der).map_err(key_rejected)?;
                if pair.public_modulus_len() < 256 {
                    return Err("RSA keys under 2048 bits are refused".to_owned());
                }
                let public = rsa_public_jwk(&pair, alg)?;
                (SigningInner::Rs256(pair), public)
            }
            Alg::EcdhEsA256kw | Alg::RsaOaep256 => {
                return Err(format!("{alg} is an encryption algorithm"));
            }
        };
        let public = with_kid(public)?;
        Ok(Self {
            kid: public.kid.clone().unwrap_or_default(),
            alg,
            public,
            inner,
        })
    }

    /// The RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signature algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public key as a JWK, with `kid`, `use` and `alg`.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// Signs `message`: Ed25519 (64 bytes), ECDSA P-256 as r || s (64 bytes, RFC 7518 §3.4), or
    /// RSASSA-PKCS1-v1_5 SHA-256 (the modulus length).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match &self.inner {
            SigningInner::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            SigningInner::Es256(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_owned()),
            SigningInner::Rs256(pair) => {
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(&sig::RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .map_err(|_| "RSA signing failed".to_owned())?;
                Ok(out)
            }
        }
    }
}

enum DecryptionInner {
    EcdhP256(agreement::PrivateKey),
    RsaOaep(rsa::OaepPrivateDecryptingKey),
}

/// One of our private decryption keys. `Debug` shows the kid and algorithm only.
pub struct DecryptionKey {
    kid: String,
    alg: Alg,
    public: PublicJwk,
    inner: DecryptionInner,
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private", &"[redacted]")
            .finish()
    }
}

impl DecryptionKey {
    /// Loads a PKCS#8 DER private key for `alg` (`ECDH-ES+A256KW` or `RSA-OAEP-256`).
    pub fn from_pkcs8(alg: Alg, der: &[u8]) -> Result<Self, String> {
        let (inner, public) = match alg {
            Alg::EcdhEsA256kw => {
                let key = agreement::PrivateKey::from_private_key_der(&agreement::ECDH_P256, der)
                    .map_err(key_rejected)?;
                let point = key
                    .compute_public_key()
                    .map_err(|_| "cannot compute the public key".to_owned())?;
                let public = ec_public_jwk(point.as_ref(), alg)?;
                (DecryptionInner::EcdhP256(key), public)
            }
            Alg::RsaOaep256 => {
                // The signing type reads the same PKCS#8 and exposes the public key.
                let pair = sig::RsaKeyPair::from_pkcs8(der).map_err(key_rejected)?;
                if pair.public_modulus_len() < 256 {
                    return Err("RSA keys under 2048 bits are refused".to_owned());
                }
                let public = rsa_public_jwk(&pair, alg)?;
                let key = rsa::PrivateDecryptingKey::from_pkcs8(der).map_err(key_rejected)?;
                let key = rsa::OaepPrivateDecryptingKey::new(key)
                    .map_err(|_| "not an RSA-OAEP key".to_owned())?;
                (DecryptionInner::RsaOaep(key), public)
            }
            Alg::EdDsa | Alg::Es256 | Alg::Rs256 => {
                return Err(format!("{alg} is a signature algorithm"));
            }
        };
        let public = with_kid(public)?;
        Ok(Self {
            kid: public.kid.clone().unwrap_or_default(),
            alg,
            public,
            inner,
        })
    }

    /// The RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key management algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public key as a JWK, with `kid`, `use` and `alg`.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// ECDH with a peer's P-256 public point: the shared secret Z (RFC 7518 §4.6.2).
    pub(crate) fn ecdh(&self, peer_point: &[u8]) -> Option<Vec<u8>> {
        match &self.inner {
            DecryptionInner::EcdhP256(key) => ecdh_p256(key, peer_point),
            DecryptionInner::RsaOaep(_) => None,
        }
    }

    /// RSA-OAEP-256 decryption of a wrapped content key.
    pub(crate) fn rsa_oaep_decrypt(&self, wrapped: &[u8]) -> Option<Vec<u8>> {
        match &self.inner {
            DecryptionInner::RsaOaep(key) => {
                let mut out = vec![0u8; key.min_output_size()];
                let plain = key
                    .decrypt(&rsa::OAEP_SHA256_MGF1SHA256, wrapped, &mut out, None)
                    .ok()?;
                Some(plain.to_vec())
            }
            DecryptionInner::EcdhP256(_) => None,
        }
    }
}

/// ECDH on P-256; `None` if the peer point is not on the curve.
pub(crate) fn ecdh_p256(key: &agreement::PrivateKey, peer_point: &[u8]) -> Option<Vec<u8>> {
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, peer_point);
    agreement::agree(key, peer, (), |z| Ok(z.to_vec())).ok()
}

/// Generates a new private key for `alg` as PKCS#8 DER. RSA keys are 2048 bits.
fn generate_pkcs8(alg: Alg) -> Result<SecretBytes, KeyError> {
    let failed = |_| KeyError::Generate { alg };
    let rng = SystemRandom::new();
    let der = match alg {
        Alg::EdDsa => sig::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        Alg::Es256 => {
            sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(failed)?
                .as_ref()
                .to_vec()
        }
        Alg::Rs256 | Alg::RsaOaep256 => {
            let pair = sig::RsaKeyPair::generate(rsa::KeySize::Rsa2048).map_err(failed)?;
            AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
                .map_err(failed)?
                .as_ref()
                .to_vec()
        }
        Alg::EcdhEsA256kw => {
            let key = agreement::PrivateKey::generate(&agreement::ECDH_P256).map_err(failed)?;
            AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
                .map_err(failed)?
                .as_ref()
                .to_vec()
        }
    };
    Ok(SecretBytes(der))
}

/// Why a key could not be created, loaded or found.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by group or others (mode {mode:04o}); private keys must be mode 0600: run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{path}: not a key file name (expected <created>_<use>_<alg>_<kid>.p8, e.g. 20261121T100000.000000Z_sig_EdDSA_<kid>.p8)"
    )]
    FileName { path: PathBuf },
    #[error("{path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{path}: the kid in the file name does not match the key inside (expected {kid})")]
    KidMismatch { path: PathBuf, kid: String },
    #[error("{path}: the same key is also stored as {other}")]
    Duplicate { path: PathBuf, other: PathBuf },
    #[error("{alg} is a `{expected}` algorithm, not `{given}`")]
    WrongUse {
        alg: Alg,
        expected: KeyUse,
        given: KeyUse,
    },
    #[error("key generation for {alg} failed")]
    Generate { alg: Alg },
    #[error(
        "no signing key in {dir}: nsr will not serve without one. Create one with `nsr keys generate --alg EdDSA` (the directory exists, so nsr does not create keys by itself)"
    )]
    NoSigningKey { dir: PathBuf },
    #[error("no {key_use} key to rotate in {dir}; create one with `nsr keys generate`")]
    NothingToRotate { dir: PathBuf, key_use: KeyUse },
}

/// Whether a key is the one in use for its purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// The newest key of its use: signs (sig) or is the one partners encrypt to (enc).
    Active,
    /// An older key: still published and still verifies or decrypts, never signs.
    Retired,
}

impl KeyStatus {
    /// `active` or `retired`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Retired => "retired",
        }
    }
}

/// What `nsr keys list` shows of a key: never private material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: Alg,
    #[serde(rename = "use")]
    pub key_use: KeyUse,
    pub created: DateTime<Utc>,
    pub status: KeyStatus,
    #[serde(skip)]
    pub path: PathBuf,
}

enum Private {
    Sign(SigningKey),
    Decrypt(DecryptionKey),
}

impl Private {
    fn public_jwk(&self) -> &PublicJwk {
        match self {
            Private::Sign(key) => key.public_jwk(),
            Private::Decrypt(key) => key.public_jwk(),
        }
    }
}

struct Entry {
    kid: String,
    alg: Alg,
    created: DateTime<Utc>,
    path: PathBuf,
    key: Private,
}

/// Our keys, loaded from the keys directory. Newest first.
pub struct KeyStore {
    dir: PathBuf,
    entries: Vec<Entry>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field(
                "kids",
                &self.entries.iter().map(|e| &e.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

const KEY_EXTENSION: &str = ".p8";
const CREATED_FORMAT: &str = "%Y%m%dT%H%M%S%.6fZ";

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<created>_<use>_<alg>_<kid>.p8` → (created, use, alg, kid). The kid may itself contain `_`
/// (base64url), so it is whatever follows the third separator.
fn parse_file_name(name: &str) -> Option<(DateTime<Utc>, KeyUse, Alg, String)> {
    let stem = name.strip_suffix(KEY_EXTENSION)?;
    let mut parts = stem.splitn(4, '_');
    let created = NaiveDateTime::parse_from_str(parts.next()?, CREATED_FORMAT)
        .ok()?
        .and_utc();
    let key_use: KeyUse = parts.next()?.parse().ok()?;
    let alg: Alg = parts.next()?.parse().ok()?;
    let kid = parts.next()?.to_owned();
    (alg.key_use() == key_use && !kid.is_empty()).then_some((created, key_use, alg, kid))
}

fn file_name(created: DateTime<Utc>, alg: Alg, kid: &str) -> String {
    format!(
        "{}_{}_{}_{kid}{KEY_EXTENSION}",
        created.format(CREATED_FORMAT),
        alg.key_use(),
        alg
    )
}

/// Refuses a key file that group or others may read or write.
#[cfg(unix)]
fn check_permissions(path: &Path, metadata: &std::fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _metadata: &std::fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

fn load_key(alg: Alg, der: &[u8]) -> Result<Private, String> {
    match alg.key_use() {
        KeyUse::Sig => SigningKey::from_pkcs8(alg, der).map(Private::Sign),
        KeyUse::Enc => DecryptionKey::from_pkcs8(alg, der).map(Private::Decrypt),
    }
}

/// Creates `dir` (and parents) with mode 0700 for the directory itself.
fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))
}

/// Writes `bytes` to `dir/name` atomically: a new temporary file (mode 0600 from the start),
/// flushed to disk, then renamed over the final name, then the directory flushed.
fn write_private_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, KeyError> {
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&temp).map_err(io_error(&temp))?;
        file.write_all(bytes).map_err(io_error(&temp))?;
        file.sync_all().map_err(io_error(&temp))?;
        std::fs::rename(&temp, &target).map_err(io_error(&target))?;
        if let Ok(handle) = std::fs::File::open(dir) {
            // Makes the rename durable; not every platform can sync a directory handle.
            let _ = handle.sync_all();
        }
        Ok(target.clone())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

impl KeyStore {
    /// Loads every key in `dir` (which must exist). Refuses, naming the file, any key file that
    /// is group- or world-accessible, badly named, unreadable as its algorithm, or whose kid
    /// does not match its name. Other files (no `.p8` suffix, or hidden) are ignored.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        let mut entries = Vec::new();
        let mut listing: Vec<_> = std::fs::read_dir(dir)
            .map_err(io_error(dir))?
            .collect::<Result<_, _>>()
            .map_err(io_error(dir))?;
        listing.sort_by_key(std::fs::DirEntry::file_name);
        for item in listing {
            let path = item.path();
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(KEY_EXTENSION) {
                continue;
            }
            let metadata = std::fs::metadata(&path).map_err(io_error(&path))?;
            if !metadata.is_file() {
                continue;
            }
            check_permissions(&path, &metadata)?;
            let Some((created, _, alg, kid)) = parse_file_name(&name) else {
                return Err(KeyError::FileName { path });
            };
            let der = SecretBytes(std::fs::read(&path).map_err(io_error(&path))?);
            let key = load_key(alg, &der.0).map_err(|reason| KeyError::BadKey {
                path: path.clone(),
                reason,
            })?;
            let actual = key.public_jwk().kid.clone().unwrap_or_default();
            if actual != kid {
                return Err(KeyError::KidMismatch { path, kid: actual });
            }
            if let Some(other) = entries.iter().find(|e: &&Entry| e.kid == kid) {
                return Err(KeyError::Duplicate {
                    path,
                    other: other.path.clone(),
                });
            }
            entries.push(Entry {
                kid,
                alg,
                created,
                path,
                key,
            });
        }
        let mut store = Self {
            dir: dir.to_path_buf(),
            entries,
        };
        store.sort();
        Ok(store)
    }

    /// For `nsr serve`: when `dir` does not exist at all (a fresh install), creates it with one
    /// EdDSA `sig` key and one `ECDH-ES+A256KW` `enc` key and returns them as `created`;
    /// otherwise loads it. Either way a signing key is then required: an existing directory
    /// without one is refused ([`KeyError::NoSigningKey`]), never silently filled.
    pub fn open_or_init(dir: &Path, now: DateTime<Utc>) -> Result<(Self, Vec<KeyInfo>), KeyError> {
        let mut created = Vec::new();
        let store = if dir.exists() {
            Self::open(dir)?
        } else {
            // Build the keys in a sibling temporary directory and rename it into place, so a
            // crash half-way never leaves an existing-but-empty keys directory behind.
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            create_private_dir(parent)?;
            let staging = parent.join(format!(
                ".{}.init-{}",
                dir.file_name().and_then(|n| n.to_str()).unwrap_or("keys"),
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&staging);
            create_private_dir(&staging)?;
            let mut staged = Self {
                dir: staging.clone(),
                entries: Vec::new(),
            };
            let built = staged
                .generate(Alg::EdDsa, now)
                .and_then(|_| staged.generate(Alg::EcdhEsA256kw, now));
            if let Err(error) = built {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(error);
            }
            match std::fs::rename(&staging, dir) {
                Ok(()) => {
                    let store = Self::open(dir)?;
                    created = store.list();
                    store
                }
                // Another process initialised it first: use its keys, not ours.
                Err(_) if dir.is_dir() => {
                    let _ = std::fs::remove_dir_all(&staging);
                    Self::open(dir)?
                }
                Err(error) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(KeyError::Io {
                        path: dir.to_path_buf(),
                        source: error,
                    });
                }
            }
        };
        if store.signing_key().is_none() {
            return Err(KeyError::NoSigningKey {
                dir: dir.to_path_buf(),
            });
        }
        Ok((store, created))
    }

    /// Opens `dir`, creating it (empty, mode 0700) if it does not exist: for `nsr keys`.
    pub fn open_or_create_dir(dir: &Path) -> Result<Self, KeyError> {
        if !dir.exists() {
            create_private_dir(dir)?;
        }
        Self::open(dir)
    }

    fn sort(&mut self) {
        // Newest first; the kid breaks ties so the order never depends on the file system.
        self.entries
            .sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.kid.cmp(&b.kid)));
    }

    /// The directory the keys live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Generates a key for `alg`, writes it (mode 0600) and adds it to the store. Its created
    /// time is `now`, moved forward by a microsecond if needed so the new key is strictly the
    /// newest: generating a key always makes it the active one for its use.
    pub fn generate(&mut self, alg: Alg, now: DateTime<Utc>) -> Result<KeyInfo, KeyError> {
        let der = generate_pkcs8(alg)?;
        let key = load_key(alg, &der.0).map_err(|reason| KeyError::BadKey {
            path: self.dir.clone(),
            reason,
        })?;
        let kid = key.public_jwk().kid.clone().unwrap_or_default();
        let newest = self
            .entries
            .iter()
            .map(|e| e.created)
            .max()
            .map(|t| t + chrono::Duration::microseconds(1));
        let created = match newest {
            Some(floor) if floor > now => floor,
            _ => now,
        };
        // The file name keeps microseconds; keep the in-memory time identical to it.
        let created = DateTime::from_timestamp_micros(created.timestamp_micros()).unwrap_or(now);
        let path = write_private_file(&self.dir, &file_name(created, alg, &kid), &der.0)?;
        self.entries.push(Entry {
            kid: kid.clone(),
            alg,
            created,
            path,
            key,
        });
        self.sort();
        self.info(&kid).ok_or(KeyError::Generate { alg })
    }

    /// Generates a key for `alg`, checking it is meant for `key_use`.
    pub fn generate_for(
        &mut self,
        alg: Alg,
        key_use: KeyUse,
        now: DateTime<Utc>,
    ) -> Result<KeyInfo, KeyError> {
        if alg.key_use() != key_use {
            return Err(KeyError::WrongUse {
                alg,
                expected: alg.key_use(),
                given: key_use,
            });
        }
        self.generate(alg, now)
    }

    /// A new key with the algorithm of the active key of `key_use`; the previous key stays
    /// (retired), so signatures made and messages encrypted with it still verify and decrypt.
    pub fn rotate(&mut self, key_use: KeyUse, now: DateTime<Utc>) -> Result<KeyInfo, KeyError> {
        let alg = self
            .entries
            .iter()
            .find(|e| e.alg.key_use() == key_use)
            .map(|e| e.alg)
            .ok_or_else(|| KeyError::NothingToRotate {
                dir: self.dir.clone(),
                key_use,
            })?;
        self.generate(alg, now)
    }

    fn status(&self, entry: &Entry) -> KeyStatus {
        let newest = self
            .entries
            .iter()
            .find(|e| e.alg.key_use() == entry.alg.key_use());
        if newest.is_some_and(|n| n.kid == entry.kid) {
            KeyStatus::Active
        } else {
            KeyStatus::Retired
        }
    }

    fn info(&self, kid: &str) -> Option<KeyInfo> {
        self.entries
            .iter()
            .find(|e| e.kid == kid)
            .map(|e| self.info_of(e))
    }

    fn info_of(&self, entry: &Entry) -> KeyInfo {
        KeyInfo {
            kid: entry.kid.clone(),
            alg: entry.alg,
            key_use: entry.alg.key_use(),
            created: entry.created,
            status: self.status(entry),
            path: entry.path.clone(),
        }
    }

    /// Every key, newest first.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.entries.iter().map(|e| self.info_of(e)).collect()
    }

    /// The active signing key: the newest `sig` key.
    pub fn signing_key(&self) -> Option<&SigningKey> {
        self.entries.iter().find_map(|e| match &e.key {
            Private::Sign(key) => Some(key),
            Private::Decrypt(_) => None,
        })
    }

    /// Any of our signing keys (active or retired) by kid.
    pub fn signing_key_by_kid(&self, kid: &str) -> Option<&SigningKey> {
        self.entries.iter().find_map(|e| match &e.key {
            Private::Sign(key) if e.kid == kid => Some(key),
            _ => None,
        })
    }

    /// The active encryption key: the newest `enc` key (the one partners should encrypt to).
    pub fn encryption_key(&self) -> Option<&DecryptionKey> {
        self.entries.iter().find_map(|e| match &e.key {
            Private::Decrypt(key) => Some(key),
            Private::Sign(_) => None,
        })
    }

    /// Any of our decryption keys (active or retired) by kid.
    pub fn decryption_key(&self, kid: &str) -> Option<&DecryptionKey> {
        self.entries.iter().find_map(|e| match &e.key {
            Private::Decrypt(key) if e.kid == kid => Some(key),
            _ => None,
        })
    }

    /// Every public key, newest first: what `/.well-known/jwks.json` serves.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self
                .entries
                .iter()
                .map(|e| e.key.public_jwk().clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_795_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn algorithm_names_round_trip_and_none_is_refused() {
        for alg in Alg::ALL {
            assert_eq!(alg.as_str().parse::<Alg>().unwrap(), alg);
        }
        for bad in ["none", "HS256", "eddsa", "RSA1_5", ""] {
            assert!(bad.parse::<Alg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc_7638_thumbprint_of_the_rfc_example_key() {
        // RFC 7638 §3.1: the RSA key and its thumbprint.
        let jwk: PublicJwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint().unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn rsa_public_key_der_parser_refuses_garbage_without_panicking() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x81],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x02, 0x02, 0x00],
            &[0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x03, 0x00],
        ] {
            assert!(parse_rsa_public_key_der(input).is_none(), "{input:?}");
        }
        assert_eq!(
            parse_rsa_public_key_der(&[0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x03]),
            Some((&[5u8][..], &[3u8][..]))
        );
    }

    #[test]
    fn file_names_carry_the_metadata() {
        let name = file_name(at(0), Alg::EcdhEsA256kw, "ab_c-d");
        assert_eq!(
            parse_file_name(&name),
            Some((at(0), KeyUse::Enc, Alg::EcdhEsA256kw, "ab_c-d".to_owned()))
        );
        for bad in [
            "20261121T100000.000000Z_enc_EdDSA_kid.p8",
            "20261121T100000.000000Z_sig_EdDSA_.p8",
            "yesterday_sig_EdDSA_kid.p8",
            "20261121T100000.000000Z_sig_none_kid.p8",
        ] {
            assert!(parse_file_name(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn generated_keys_rotate_and_debug_shows_no_private_material() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let mut store = KeyStore::open_or_create_dir(&keys_dir).unwrap();
        for alg in Alg::ALL {
            store.generate(alg, at(0)).unwrap();
        }
        let first = store.signing_key().unwrap().kid().to_owned();
        // Same instant: the new key is still strictly newer.
        let rotated = store.rotate(KeyUse::Sig, at(0)).unwrap();
        assert_eq!(rotated.status, KeyStatus::Active);
        assert_ne!(rotated.kid, first);
        let reopened = KeyStore::open(&keys_dir).unwrap();
        assert_eq!(reopened.list(), store.list());
        assert_eq!(reopened.signing_key().unwrap().kid(), rotated.kid);
        assert_eq!(reopened.jwks().keys.len(), 6);
        assert!(reopened.signing_key_by_kid(&first).is_some());
        for info in reopened.list() {
            let jwk = reopened
                .jwks()
                .keys
                .into_iter()
                .find(|k| k.kid.as_deref() == Some(&info.kid))
                .unwrap();
            assert_eq!(jwk.thumbprint().unwrap(), info.kid);
            assert_eq!(jwk.alg.as_deref(), Some(info.alg.as_str()));
            assert_eq!(jwk.key_use.as_deref(), Some(info.key_use.as_str()));
        }
        let shown = format!("{store:?} {:?}", store.signing_key().unwrap());
        assert!(
            shown.contains("[redacted]") && !shown.contains("PKCS"),
            "{shown}"
        );
    }
}
