//! The release decision: what registry data a reply may carry to a partner. Every message that
//! can hold registry records — the sync search reply, the async `on-search` callback, and both
//! transaction-status replies (which may carry stored results) — passes through [`release`]
//! after it is built and before it is sealed. Nothing else calls `Envelopes::seal` with
//! registry data (`Gateway::seal_reply` is the only caller).
//!
//! Today every mapped field of every found record is released: consent policies (issue
//! "Consent") are not built yet. That issue replaces the body of [`release`] with the policy
//! decision — which records, then which fields (ARCHITECTURE.md) — working on the final wire
//! object, so it sees exactly what would leave.

use crate::partners::Partner;
use serde_json::Value;

/// Why a reply may not be sent at all.
#[derive(Debug, thiserror::Error)]
#[error("disclosure refused: {0}")]
pub struct Withheld(pub String);

/// Decides what of `message` (a `SearchResponse` or `TxnStatusResponse`, before sealing) may
/// go to `partner` for `action` (`on-search`, `txn-on-status`). It may remove records and
/// fields in place; an `Err` means nothing is sent.
pub fn release(partner: &Partner, action: &str, message: &mut Value) -> Result<(), Withheld> {
    // No policy yet: everything the mapping renders is released (see the module docs).
    let _ = (partner, action, message);
    Ok(())
}
