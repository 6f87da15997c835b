//! Staff roles and the authenticated caller.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What a member of staff may do. A user may hold several roles.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads registry data (personal fields masked).
    Viewer,
    /// Submits change requests; sees personal fields.
    Enumerator,
    /// Approves or rejects other people's change requests; labels named versions.
    Approver,
    /// Reads the audit log, change logs and change requests (personal fields masked); no
    /// registry writes.
    Auditor,
    /// Manages staff users and configuration; reads no registry data by this role alone.
    Admin,
}

impl Role {
    /// Every role, in the order they are listed to people.
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Enumerator,
        Role::Approver,
        Role::Auditor,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Enumerator => "enumerator",
            Self::Approver => "approver",
            Self::Auditor => "auditor",
            Self::Admin => "admin",
        }
    }

    /// Parses a role name (case-insensitive).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// Whether the role sees `pii: true` fields. Enumerators and approvers must see what they
    /// capture and check; admins manage the people who do. Viewers (reporting, programme
    /// staff) and auditors (who check process, not people) get those fields masked.
    pub fn sees_pii(self) -> bool {
        matches!(self, Self::Enumerator | Self::Approver | Self::Admin)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a caller's identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A token nsr signed after a password login.
    Local,
    /// A token from the configured OpenID Connect provider.
    Oidc,
}

/// An authenticated member of staff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The name recorded as actor: a staff user name, or `oidc:<name>` for external tokens
    /// (staff user names cannot contain `:`, so the two never collide).
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub origin: Origin,
}

impl Caller {
    /// Whether the caller holds any of `roles`.
    pub fn has_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.roles.contains(r))
    }

    /// Whether personal (`pii`) fields are shown to this caller unmasked.
    pub fn sees_pii(&self) -> bool {
        self.roles.iter().any(|r| r.sees_pii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_their_names_and_only_readers_of_people_see_pii() {
        for role in Role::ALL {
            assert_eq!(Role::parse(&role.as_str().to_uppercase()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
        let masked: Vec<Role> = Role::ALL.into_iter().filter(|r| !r.sees_pii()).collect();
        assert_eq!(masked, [Role::Viewer, Role::Auditor]);
    }
}
