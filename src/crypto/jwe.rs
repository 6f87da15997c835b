//! Encryption of DCI messages: the spec's `EncryptedMessage`
//! `{header: {alg, enc, kid, …}, ciphertext, encrypted_key, tag, iv}`.
//!
//! That shape is the RFC 7516 §7.2.2 flattened JWE JSON serialization with only the
//! per-recipient unprotected `header` member (no `protected`, `unprotected` or `aad`). So:
//!
//! - the AAD is the empty string (RFC 7516 §5.1 step 14: ASCII(BASE64URL(protected header)),
//!   and there is no protected header). The header is still bound: changing `alg`, `enc`, `kid`,
//!   `epk`, `apu` or `apv` changes the key that unwraps the CEK, so decryption fails; and the
//!   envelope signature covers the whole `EncryptedMessage`;
//! - for `ECDH-ES+A256KW` the ephemeral public key goes in `header.epk` (an EC P-256 JWK with
//!   `kty`, `crv`, `x`, `y`), next to the optional `apu`/`apv` (RFC 7518 §4.6.1);
//! - `enc` is always `A256GCM`: 96-bit IV, 128-bit tag (RFC 7518 §5.3).
//!
//! Supported key management: `ECDH-ES+A256KW` (P-256; Concat KDF per RFC 7518 §4.6.2, then
//! AES-256 key wrap, RFC 3394) and `RSA-OAEP-256` (RFC 7518 §4.3).

use super::keys::{Alg, DecryptionKey, KeyStore, PublicJwk, ecdh_p256};
use super::{b64url, b64url_decode};
use aws_lc_rs::key_wrap::{AES_256, KeyEncryptionKey, KeyWrap};
use aws_lc_rs::{aead, agreement, digest, rand, rsa};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only content encryption algorithm.
pub const ENC_A256GCM: &str = "A256GCM";
const CEK_LEN: usize = 32;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The `header` of an [`EncryptedMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JweHeader {
    pub alg: String,
    pub enc: String,
    /// The recipient's key id (nsr's kids are RFC 7638 thumbprints).
    pub kid: String,
    /// The sender's ephemeral public key, for `ECDH-ES+A256KW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epk: Option<PublicJwk>,
    /// Agreement PartyUInfo / PartyVInfo (base64url), for `ECDH-ES+A256KW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apv: Option<String>,
}

/// A DCI `EncryptedMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedMessage {
    pub header: JweHeader,
    pub ciphertext: String,
    pub encrypted_key: String,
    pub tag: String,
    pub iv: String,
}

/// Why a message could not be encrypted or decrypted. Every variant maps to DCI
/// `err.encryption.invalid`; the detail is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JweError {
    #[error("not an EncryptedMessage: {0}")]
    Malformed(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("no decryption key with kid `{0}`")]
    UnknownKey(String),
    #[error("the recipient key is unusable: {0}")]
    RecipientKey(String),
    /// Unwrapping or authenticating failed; deliberately says no more.
    #[error("decryption failed")]
    Failed,
    #[error("encryption failed")]
    Encrypt,
}

impl JweError {
    /// The DCI ack error code.
    pub fn dci_code(&self) -> &'static str {
        "err.encryption.invalid"
    }
}

const MESSAGE_MEMBERS: [&str; 5] = ["header", "ciphertext", "encrypted_key", "tag", "iv"];
/// `typ` and `cty` are informational; everything else (`zip`, `crit`, `jku`, `jwk`, `x5u`,
/// `x5c`, …) is refused rather than ignored.
const HEADER_MEMBERS: [&str; 8] = ["alg", "enc", "kid", "epk", "apu", "apv", "typ", "cty"];

impl EncryptedMessage {
    /// Reads an `EncryptedMessage` from a DCI `message` value. Strict: unknown members are
    /// refused (a `protected` or `aad` member would change the AAD, `zip` the plaintext), and
    /// every member must be a string of the right type. Never panics.
    pub fn from_value(value: &Value) -> Result<Self, JweError> {
        let object = value
            .as_object()
            .ok_or_else(|| JweError::Malformed("not a JSON object".to_owned()))?;
        if let Some(name) = object
            .keys()
            .find(|k| !MESSAGE_MEMBERS.contains(&k.as_str()))
        {
            return Err(JweError::Malformed(format!("unsupported member `{name}`")));
        }
        let header = object
            .get("header")
            .and_then(Value::as_object)
            .ok_or_else(|| JweError::Malformed("no `header` object".to_owned()))?;
        if let Some(name) = header
            .keys()
            .find(|k| !HEADER_MEMBERS.contains(&k.as_str()))
        {
            return Err(JweError::Unsupported(format!("header parameter `{name}`")));
        }
        serde_json::from_value(value.clone()).map_err(|e| JweError::Malformed(e.to_string()))
    }

    /// The message as a JSON value, for the envelope.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Concat KDF (NIST SP 800-56A §5.8.1) as RFC 7518 §4.6.2 uses it: SHA-256 over
/// `round (32-bit BE) || Z || AlgorithmID || PartyUInfo || PartyVInfo || SuppPubInfo`, where the
/// first three info fields are 32-bit BE length-prefixed and SuppPubInfo is the key length in
/// bits (32-bit BE). `algorithm_id` is `alg` for key wrapping (`ECDH-ES+A256KW`) and `enc` for
/// direct agreement.
pub fn concat_kdf(z: &[u8], algorithm_id: &str, apu: &[u8], apv: &[u8], key_bits: u32) -> Vec<u8> {
    let key_len = usize::try_from(key_bits / 8).unwrap_or(0);
    let prefixed = |ctx: &mut digest::Context, bytes: &[u8]| {
        ctx.update(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        ctx.update(bytes);
    };
    let mut out = Vec::with_capacity(key_len + 32);
    let mut round: u32 = 1;
    while out.len() < key_len {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&round.to_be_bytes());
        ctx.update(z);
        prefixed(&mut ctx, algorithm_id.as_bytes());
        prefixed(&mut ctx, apu);
        prefixed(&mut ctx, apv);
        ctx.update(&key_bits.to_be_bytes());
        out.extend_from_slice(ctx.finish().as_ref());
        round = round.wrapping_add(1);
    }
    out.truncate(key_len);
    out
}

fn random<const N: usize>() -> Result<[u8; N], JweError> {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes).map_err(|_| JweError::Encrypt)?;
    Ok(bytes)
}

fn aes_kw_wrap(kek: &[u8], cek: &[u8]) -> Result<Vec<u8>, JweError> {
    let kek = KeyEncryptionKey::new(&AES_256, kek).map_err(|_| JweError::Encrypt)?;
    let mut out = vec![0u8; cek.len() + 8];
    let wrapped = kek.wrap(cek, &mut out).map_err(|_| JweError::Encrypt)?;
    Ok(wrapped.to_vec())
}

fn aes_kw_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, JweError> {
    let kek = KeyEncryptionKey::new(&AES_256, kek).map_err(|_| JweError::Failed)?;
    let mut out = vec![0u8; wrapped.len()];
    let cek = kek
        .unwrap(wrapped, &mut out)
        .map_err(|_| JweError::Failed)?;
    Ok(cek.to_vec())
}

fn gcm_key(cek: &[u8]) -> Result<aead::LessSafeKey, JweError> {
    aead::UnboundKey::new(&aead::AES_256_GCM, cek)
        .map(aead::LessSafeKey::new)
        .map_err(|_| JweError::Failed)
}

/// The key management algorithm for a recipient JWK: its own `alg`, or by key type.
fn recipient_alg(recipient: &PublicJwk) -> Result<Alg, JweError> {
    if recipient.key_use.as_deref().is_some_and(|u| u != "enc") {
        return Err(JweError::RecipientKey("not an `enc` key".to_owned()));
    }
    let alg = match (recipient.alg.as_deref(), recipient.kty.as_str()) {
        (Some(name), _) => name
            .parse::<Alg>()
            .map_err(|_| JweError::Unsupported(format!("alg `{name}`")))?,
        (None, "EC") => Alg::EcdhEsA256kw,
        (None, "RSA") => Alg::RsaOaep256,
        (None, other) => return Err(JweError::Unsupported(format!("key type `{other}`"))),
    };
    if !matches!(alg, Alg::EcdhEsA256kw | Alg::RsaOaep256) || !recipient.fits(alg) {
        return Err(JweError::RecipientKey(format!("not a {alg} key")));
    }
    Ok(alg)
}

/// Encrypts `plaintext` to a partner's public `enc` key: a fresh random CEK and IV, AES-256-GCM
/// with an empty AAD, the CEK wrapped with `ECDH-ES+A256KW` (fresh ephemeral P-256 key, no
/// `apu`/`apv`) or `RSA-OAEP-256`.
pub fn encrypt(plaintext: &[u8], recipient: &PublicJwk) -> Result<EncryptedMessage, JweError> {
    let alg = recipient_alg(recipient)?;
    let kid = match &recipient.kid {
        Some(kid) => kid.clone(),
        None => recipient.thumbprint().map_err(JweError::RecipientKey)?,
    };
    let cek = random::<CEK_LEN>()?;
    let (encrypted_key, epk) = match alg {
        Alg::EcdhEsA256kw => {
            let point = recipient.ec_point().map_err(JweError::RecipientKey)?;
            let ephemeral = agreement::PrivateKey::generate(&agreement::ECDH_P256)
                .map_err(|_| JweError::Encrypt)?;
            let ephemeral_public = ephemeral
                .compute_public_key()
                .map_err(|_| JweError::Encrypt)?;
            let z = ecdh_p256(&ephemeral, &point)
                .ok_or_else(|| JweError::RecipientKey("not a point on P-256".to_owned()))?;
            let kek = concat_kdf(&z, alg.as_str(), b"", b"", 256);
            let (x, y) = match ephemeral_public.as_ref() {
                [4, coordinates @ ..] if coordinates.len() == 64 => coordinates.split_at(32),
                _ => return Err(JweError::Encrypt),
            };
            let epk = PublicJwk {
                kty: "EC".to_owned(),
                kid: None,
                key_use: None,
                alg: None,
                crv: Some("P-256".to_owned()),
                x: Some(b64url(x)),
                y: Some(b64url(y)),
                n: None,
                e: None,
            };
            (aes_kw_wrap(&kek, &cek)?, Some(epk))
        }
        Alg::RsaOaep256 => {
            let (n, e) = recipient.rsa_components().map_err(JweError::RecipientKey)?;
            let public: rsa::PublicEncryptingKey = rsa::PublicKeyComponents { n, e }
                .try_into()
                .map_err(|_| JweError::RecipientKey("not a valid RSA key".to_owned()))?;
            let public = rsa::OaepPublicEncryptingKey::new(public)
                .map_err(|_| JweError::RecipientKey("not an RSA-OAEP key".to_owned()))?;
            let mut out = vec![0u8; public.ciphertext_size()];
            let wrapped = public
                .encrypt(&rsa::OAEP_SHA256_MGF1SHA256, &cek, &mut out, None)
                .map_err(|_| JweError::Encrypt)?;
            (wrapped.to_vec(), None)
        }
        _ => return Err(JweError::Unsupported(format!("alg {alg}"))),
    };
    let iv = random::<IV_LEN>()?;
    let mut ciphertext = plaintext.to_vec();
    let tag = gcm_key(&cek)?
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(iv),
            aead::Aad::empty(),
            &mut ciphertext,
        )
        .map_err(|_| JweError::Encrypt)?;
    Ok(EncryptedMessage {
        header: JweHeader {
            alg: alg.as_str().to_owned(),
            enc: ENC_A256GCM.to_owned(),
            kid,
            epk,
            apu: None,
            apv: None,
        },
        ciphertext: b64url(&ciphertext),
        encrypted_key: b64url(&encrypted_key),
        tag: b64url(tag.as_ref()),
        iv: b64url(&iv),
    })
}

/// Decrypts a message addressed to one of our keys (chosen by `header.kid`, active or
/// retired).
pub fn decrypt(message: &EncryptedMessage, keys: &KeyStore) -> Result<Vec<u8>, JweError> {
    let key = keys
        .decryption_key(&message.header.kid)
        .ok_or_else(|| JweError::UnknownKey(message.header.kid.clone()))?;
    decrypt_with(message, key)
}

fn decode(text: &str, name: &str) -> Result<Vec<u8>, JweError> {
    b64url_decode(text).ok_or_else(|| JweError::Malformed(format!("`{name}` is not base64url")))
}

/// Decrypts with one given key. The header's `alg` must be the key's own algorithm (no
/// algorithm confusion) and its `kid` the key's kid.
pub fn decrypt_with(message: &EncryptedMessage, key: &DecryptionKey) -> Result<Vec<u8>, JweError> {
    let header = &message.header;
    if header.enc != ENC_A256GCM {
        return Err(JweError::Unsupported(format!("enc `{}`", header.enc)));
    }
    let alg: Alg = header
        .alg
        .parse()
        .map_err(|_| JweError::Unsupported(format!("alg `{}`", header.alg)))?;
    if alg != key.alg() {
        return Err(JweError::Unsupported(format!(
            "alg {alg} with a {} key",
            key.alg()
        )));
    }
    if header.kid != key.kid() {
        return Err(JweError::UnknownKey(header.kid.clone()));
    }
    let iv: [u8; IV_LEN] = decode(&message.iv, "iv")?
        .try_into()
        .map_err(|_| JweError::Malformed("`iv` must be 96 bits".to_owned()))?;
    let tag = decode(&message.tag, "tag")?;
    if tag.len() != TAG_LEN {
        return Err(JweError::Malformed("`tag` must be 128 bits".to_owned()));
    }
    let wrapped = decode(&message.encrypted_key, "encrypted_key")?;
    let mut ciphertext = decode(&message.ciphertext, "ciphertext")?;
    let cek = match alg {
        Alg::EcdhEsA256kw => {
            let epk = header
                .epk
                .as_ref()
                .ok_or_else(|| JweError::Malformed("ECDH-ES needs `epk`".to_owned()))?;
            let point = epk.ec_point().map_err(JweError::Malformed)?;
            let apu = match &header.apu {
                Some(text) => decode(text, "apu")?,
                None => Vec::new(),
            };
            let apv = match &header.apv {
                Some(text) => decode(text, "apv")?,
                None => Vec::new(),
            };
            // aws-lc checks the point is on the curve (no invalid-curve attack).
            let z = key.ecdh(&point).ok_or(JweError::Failed)?;
            let kek = concat_kdf(&z, alg.as_str(), &apu, &apv, 256);
            if wrapped.len() != CEK_LEN + 8 {
                return Err(JweError::Failed);
            }
            aes_kw_unwrap(&kek, &wrapped)?
        }
        Alg::RsaOaep256 => {
            // RFC 7516 §11.5: on a bad wrapped key carry on with a random CEK, so a failure
            // looks the same as a bad tag and no padding oracle appears.
            match key.rsa_oaep_decrypt(&wrapped) {
                Some(cek) if cek.len() == CEK_LEN => cek,
                _ => random::<CEK_LEN>().map_err(|_| JweError::Failed)?.to_vec(),
            }
        }
        _ => return Err(JweError::Unsupported(format!("alg {alg}"))),
    };
    if cek.len() != CEK_LEN {
        return Err(JweError::Failed);
    }
    let plaintext = gcm_key(&cek)?
        .open_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(iv),
            aead::Aad::empty(),
            &tag,
            &mut ciphertext,
        )
        .map_err(|_| JweError::Failed)?;
    Ok(plaintext.to_vec())
}

/// Encrypts a DCI `message` value (its compact JSON) and returns the `EncryptedMessage` value
/// to put in the envelope (with `header.is_msg_encrypted = true`), before signing.
pub fn encrypt_json(message: &Value, recipient: &PublicJwk) -> Result<Value, JweError> {
    let plaintext = serde_json::to_vec(message).map_err(|_| JweError::Encrypt)?;
    Ok(encrypt(&plaintext, recipient)?.to_value())
}

/// Decrypts an envelope's `message` (an `EncryptedMessage`) back to the DCI message value.
pub fn decrypt_json(message: &Value, keys: &KeyStore) -> Result<Value, JweError> {
    let encrypted = EncryptedMessage::from_value(message)?;
    let plaintext = decrypt(&encrypted, keys)?;
    serde_json::from_slice(&plaintext)
        .map_err(|_| JweError::Malformed("the plaintext is not JSON".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(x: &str, y: &str) -> Vec<u8> {
        let mut out = vec![4];
        out.extend(b64url_decode(x).unwrap());
        out.extend(b64url_decode(y).unwrap());
        out
    }

    /// RFC 7518 appendix C: ECDH-ES key agreement between Alice's ephemeral key and Bob's key,
    /// Concat KDF with `A128GCM`, apu "Alice", apv "Bob".
    #[test]
    fn rfc_7518_appendix_c_ecdh_es_derives_the_published_key() {
        let alice_d = b64url_decode("0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo").unwrap();
        let bob_d = b64url_decode("VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw").unwrap();
        let alice_public = point(
            "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
            "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps",
        );
        let bob_public = point(
            "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ",
            "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck",
        );
        let alice =
            agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &alice_d).unwrap();
        let bob = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &bob_d).unwrap();
        let z = ecdh_p256(&alice, &bob_public).unwrap();
        assert_eq!(z, ecdh_p256(&bob, &alice_public).unwrap());
        assert_eq!(
            z,
            [
                158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
                110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196
            ]
        );
        let derived = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(b64url(&derived), "VqqN6vgjbSBcIijNcacQGg");
    }

    #[test]
    fn a_point_off_the_curve_is_refused() {
        let key = agreement::PrivateKey::generate(&agreement::ECDH_P256).unwrap();
        let mut bad = vec![4u8];
        bad.extend([1u8; 64]);
        assert!(ecdh_p256(&key, &bad).is_none());
    }
}
