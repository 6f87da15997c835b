//! Functional identifiers: `IND-` and `HH-` ids are generated here; supporting-table ids are
//! supplied by the caller and checked against their register's prefix.

use super::register::RegisterDef;

/// Crockford base32: no I, L, O or U, so ids read aloud and typed by hand survive.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of a generated id's body (after the prefix), as the NSR design specifies.
pub const GENERATED_BODY_LEN: usize = 12;
const MAX_ID_LEN: usize = 64;

/// A new id for `prefix` from 60 random bits (12 base32 characters).
pub fn generate(prefix: &str, random: u64) -> String {
    let mut id = String::with_capacity(prefix.len() + GENERATED_BODY_LEN);
    id.push_str(prefix);
    for i in (0..GENERATED_BODY_LEN).rev() {
        let index = ((random >> (i * 5)) & 31) as usize;
        id.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'0')));
    }
    id
}

/// Checks a supplied id: the register's prefix, then 1+ characters of `A-Z 0-9 -`.
pub fn check_supplied(def: &RegisterDef, id: &str) -> Result<(), String> {
    let Some(body) = id.strip_prefix(&def.prefix) else {
        return Err(format!("`{id}` does not start with `{}`", def.prefix));
    };
    if body.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!(
            "`{id}` must have 1 to {} characters after the prefix",
            MAX_ID_LEN - def.prefix.len()
        ));
    }
    if !body
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "`{id}` may only hold A-Z, 0-9 and `-` after the prefix"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_a_twelve_character_body() {
        let id = generate("IND-", u64::MAX);
        assert_eq!(id, "IND-ZZZZZZZZZZZZ");
        assert_eq!(generate("IND-", 33), "IND-000000000011");
        assert_eq!(generate("HH-", 0).len(), 3 + GENERATED_BODY_LEN);
    }
}
