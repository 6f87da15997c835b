//! The hash-chained audit log. Each entry's hash covers its own content and the previous
//! entry's hash, so editing, removing or reordering an entry breaks the chain at that entry.
//! Entries are written by the store in the same transaction as the change they describe.
//!
//! Disclosures (data sent to partners, `consent::Disclosure`) have a chain of their own, in the
//! same format: on SQLite the disclosure log lives in a file of its own, because every write to
//! the registry's file makes each reader drop its page cache and memory map, and a busy gateway
//! writes the log hundreds of times a second. The registry chain covers the disclosure chain
//! through anchors: entries whose action is [`ANCHOR_ACTION`] and whose detail names a
//! disclosure-chain entry and its hash (written every `disclosure_anchor_seconds`). Verifying
//! walks both chains and checks every anchor.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The action of a registry-chain entry anchoring the disclosure chain; its detail is
/// `{"seq": n, "hash": h}`, the disclosure-chain entry `n` and its hash.
pub const ANCHOR_ACTION: &str = "disclosure.anchor";

/// The two hash chains a store keeps, in tables of the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditChain {
    /// Every change to the registry, partners, staff and policies; anchors of the other.
    Registry,
    /// One entry per disclosure, carrying its digest.
    Disclosures,
}

impl AuditChain {
    /// The entries' table and the head's table.
    pub fn tables(self) -> (&'static str, &'static str) {
        match self {
            AuditChain::Registry => ("audit_log", "audit_head"),
            AuditChain::Disclosures => ("disclosure_audit_log", "disclosure_audit_head"),
        }
    }
}

/// One audit entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// 1, 2, 3 … with no gaps.
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// What happened, e.g. `change_set`.
    pub action: String,
    /// What it happened to, e.g. the change set id.
    pub subject: String,
    /// JSON text with the details (counts, the content digest), hashed exactly as stored.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What an entry will say, before the store numbers and chains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
}

impl AuditDraft {
    /// Chains this draft after the entry numbered `prev_seq` whose hash is `prev_hash`.
    pub fn chain(&self, prev_seq: i64, prev_hash: &str) -> AuditEntry {
        let seq = prev_seq + 1;
        let hash = entry_hash(
            seq,
            self.at,
            &self.actor,
            &self.action,
            &self.subject,
            &self.detail,
            prev_hash,
        );
        AuditEntry {
            seq,
            at: self.at,
            actor: self.actor.clone(),
            action: self.action.clone(),
            subject: self.subject.clone(),
            detail: self.detail.clone(),
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }
}

/// SHA-256 (hex) of the JSON array `[seq, at, actor, action, subject, detail, prev_hash]`, with
/// `at` in the stores' text form (RFC 3339, UTC, 6 fractional digits).
pub fn entry_hash(
    seq: i64,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
    prev_hash: &str,
) -> String {
    let canonical = serde_json::json!([
        seq,
        crate::clock::to_text(at),
        actor,
        action,
        subject,
        detail,
        prev_hash
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("audit entry {seq} was edited: its hash does not match its content")]
    Edited { seq: i64 },
    #[error(
        "audit entry {expected} is missing (the next entry found is {found}): removed or reordered"
    )]
    Missing { expected: i64, found: i64 },
    #[error(
        "audit entry {seq} does not follow entry {previous}: its prev_hash does not match (an entry was removed, replaced or reordered)"
    )]
    Unlinked { seq: i64, previous: i64 },
    #[error(
        "the audit log ends at entry {last} but its head records entry {head}: entries were removed from the end"
    )]
    Truncated { last: i64, head: i64 },
    #[error("the disclosure chain is broken: {0}")]
    Disclosures(Box<ChainBreak>),
    #[error(
        "audit entry {anchor} anchors disclosure-chain entry {seq}, which is missing or no longer has the anchored hash: the disclosure log was rewritten or cut short"
    )]
    Anchor { anchor: i64, seq: i64 },
}

/// A registry-chain entry's anchor, when it is one: the disclosure-chain entry it names and
/// that entry's hash.
pub fn anchor_of(entry: &AuditEntry) -> Option<(i64, String)> {
    if entry.action != ANCHOR_ACTION {
        return None;
    }
    let detail: serde_json::Value = serde_json::from_str(&entry.detail).ok()?;
    Some((
        detail.get("seq")?.as_i64()?,
        detail.get("hash")?.as_str()?.to_owned(),
    ))
}

/// Walks entries in `seq` order, one at a time, so a long log is verified in constant memory.
#[derive(Debug)]
pub struct ChainVerifier {
    last_seq: i64,
    last_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl ChainVerifier {
    /// Checks the next entry.
    pub fn check(&mut self, entry: &AuditEntry) -> Result<(), ChainBreak> {
        if entry.seq != self.last_seq + 1 {
            return Err(ChainBreak::Missing {
                expected: self.last_seq + 1,
                found: entry.seq,
            });
        }
        let recomputed = entry_hash(
            entry.seq,
            entry.at,
            &entry.actor,
            &entry.action,
            &entry.subject,
            &entry.detail,
            &entry.prev_hash,
        );
        if recomputed != entry.hash {
            return Err(ChainBreak::Edited { seq: entry.seq });
        }
        if entry.prev_hash != self.last_hash {
            return Err(ChainBreak::Unlinked {
                seq: entry.seq,
                previous: self.last_seq,
            });
        }
        self.last_seq = entry.seq;
        self.last_hash = entry.hash.clone();
        Ok(())
    }

    /// Checks the end of the walk against the store's record of the last entry written.
    pub fn finish(&self, head_seq: i64) -> Result<i64, ChainBreak> {
        if head_seq != self.last_seq {
            return Err(ChainBreak::Truncated {
                last: self.last_seq,
                head: head_seq,
            });
        }
        Ok(self.last_seq)
    }
}

/// Appends the canonical JSON text of an object to `out`: keys sorted at every depth, no
/// insignificant white space. Content digests use it, so they do not depend on how a
/// database orders JSON keys.
pub fn write_canonical_object(map: &serde_json::Map<String, serde_json::Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string or number into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        write_canonical_json(item, out);
    }
    out.push(b'}');
}

/// Appends the canonical JSON text of `value` to `out` (no intermediate strings).
pub fn write_canonical_json(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_json(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut entries: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let draft = AuditDraft {
                at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
                    + chrono::Duration::seconds(i),
                actor: "tester".into(),
                action: "change_set".into(),
                subject: format!("cs-{i}"),
                detail: "{}".into(),
            };
            let (seq, hash) = entries
                .last()
                .map_or((0, GENESIS_HASH.to_owned()), |e| (e.seq, e.hash.clone()));
            entries.push(draft.chain(seq, &hash));
        }
        entries
    }

    fn verify(entries: &[AuditEntry], head: i64) -> Result<i64, ChainBreak> {
        let mut verifier = ChainVerifier::default();
        for entry in entries {
            verifier.check(entry)?;
        }
        verifier.finish(head)
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5), 5), Ok(5));
    }

    #[test]
    fn edits_removals_reorders_and_truncation_are_named() {
        let mut edited = chain(5);
        edited[2].actor = "mallory".into();
        assert_eq!(verify(&edited, 5), Err(ChainBreak::Edited { seq: 3 }));

        let mut removed = chain(5);
        removed.remove(1);
        assert_eq!(
            verify(&removed, 5),
            Err(ChainBreak::Missing {
                expected: 2,
                found: 3
            })
        );

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert_eq!(
            verify(&reordered, 5),
            Err(ChainBreak::Missing {
                expected: 2,
                found: 3
            })
        );

        // A forger who renumbers and rehashes entry 3 after dropping the old one still breaks
        // the link from entry 3 to entry 2.
        let mut forged = chain(5);
        let replacement = AuditDraft {
            at: forged[2].at,
            actor: "mallory".into(),
            action: "change_set".into(),
            subject: "x".into(),
            detail: "{}".into(),
        }
        .chain(2, GENESIS_HASH);
        forged[2] = replacement;
        assert_eq!(
            verify(&forged, 5),
            Err(ChainBreak::Unlinked {
                seq: 3,
                previous: 2
            })
        );

        assert_eq!(
            verify(&chain(5)[..4], 5),
            Err(ChainBreak::Truncated { last: 4, head: 5 })
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = serde_json::json!({"b": 1, "a": {"d": [1, {"z": 1, "y": 2}], "c": "é"}});
        let mut out = Vec::new();
        write_canonical_json(&value, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"c":"é","d":[1,{"y":2,"z":1}]},"b":1}"#
        );
    }
}
