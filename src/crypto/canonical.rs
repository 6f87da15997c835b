//! Canonical JSON for signing: the bytes Python's
//! `json.dumps(obj, sort_keys=True, separators=(",", ":"))` writes (with its default
//! `ensure_ascii=True`), so a Python partner (OpenSPP2's DCI signer does exactly this) and nsr
//! hash the same bytes. The exact rules are in `docs/message-security.md` §2:
//!
//! - objects: keys sorted by Unicode code point (Python `str` order; byte order of UTF-8 is the
//!   same order), no whitespace, `,` and `:` separators;
//! - strings: `"` `\` and the five short escapes `\b \f \n \r \t`; every other character outside
//!   printable ASCII (0x20..=0x7E) as `\uXXXX` with lowercase hex, characters above U+FFFF as a
//!   UTF-16 surrogate pair, so the output is pure ASCII;
//! - integers (anything serde_json holds as `i64`/`u64`): decimal digits;
//! - other numbers (`f64`): Python's `repr(float)`: the shortest digits that round-trip,
//!   positional when the decimal exponent is in `-5 < e < 16` (always with a fractional part,
//!   `1.0`), otherwise `d.ddde+XX` / `e-XX` (at least two exponent digits, no `.0`);
//! - `true`, `false`, `null`.
//!
//! This is deliberately not RFC 8785 (JCS): JCS sorts keys by UTF-16 code units, writes
//! non-ASCII characters raw and formats numbers the ECMAScript way (`1e+21`, no `.0`).

use serde_json::Value;

/// The canonical bytes of `value` (always ASCII).
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out);
    out
}

/// Appends the canonical bytes of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    write_value(value, out);
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(number, out),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // The crate keeps insertion order (`preserve_order`), so sort here. Rust orders
            // `str` by UTF-8 bytes, which is code point order: the order Python's `sorted`
            // gives `str` keys.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(item, out);
            }
            out.push(b'}');
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u16_escape(unit: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(b"\\u");
    for shift in [12u16, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for ch in text.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            // Printable ASCII is written as is (Python's `ESCAPE_ASCII` keeps ' '..='~').
            ' '..='~' => out.push(ch as u8),
            _ => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    push_u16_escape(*unit, out);
                }
            }
        }
    }
    out.push(b'"');
}

fn write_number(number: &serde_json::Number, out: &mut Vec<u8>) {
    if let Some(n) = number.as_u64() {
        out.extend_from_slice(n.to_string().as_bytes());
    } else if let Some(n) = number.as_i64() {
        out.extend_from_slice(n.to_string().as_bytes());
    } else if let Some(f) = number.as_f64() {
        out.extend_from_slice(python_float_repr(f).as_bytes());
    } else {
        // Unreachable without serde_json's `arbitrary_precision`; its own text is the best
        // remaining answer.
        out.extend_from_slice(number.to_string().as_bytes());
    }
}

/// Python's `repr(float)` for a finite `f64` (serde_json holds no NaN or infinity).
///
/// Python (`float_repr_style` "short", David Gay's `dtoa` mode 0) writes the shortest digit
/// string that reads back as the same `f64`; when several strings of that length do, the one
/// nearest the exact binary value, and on an exact tie the one with an even last digit. Rust's
/// `{:e}` also gives the shortest round-tripping digits but breaks exact ties upwards
/// (`…429.625` → `…429.63` where Python writes `…429.62`), so ties are settled here from the
/// exact decimal expansion. Layout: positional when the decimal exponent `e` (value =
/// d.ddd × 10^e) satisfies `-5 < e < 16`, always with a fractional part (`1.0`); otherwise
/// `d[.ddd]e±XX` with at least two exponent digits.
pub(crate) fn python_float_repr(value: f64) -> String {
    if !value.is_finite() {
        // Python would write NaN/Infinity, which is not JSON; serde_json cannot hold them.
        return "null".to_owned();
    }
    let (digits, exponent) = if value == 0.0 {
        (b"0".to_vec(), 0)
    } else {
        python_digits(value.abs())
    };
    let digits = String::from_utf8_lossy(&digits).into_owned();
    let mut out = String::with_capacity(digits.len() + 8);
    if value.is_sign_negative() {
        out.push('-');
    }
    if (-5 < exponent) && (exponent < 16) {
        if exponent >= 0 {
            let int_len = usize::try_from(exponent).unwrap_or(0) + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                let (int_part, frac_part) = digits.split_at(int_len);
                out.push_str(int_part);
                out.push('.');
                out.push_str(frac_part);
            }
        } else {
            let zeros = usize::try_from(-exponent - 1).unwrap_or(0);
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', zeros));
            out.push_str(&digits);
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exponent.unsigned_abs()));
    }
    out
}

/// Significant digits (ASCII, no leading or trailing zeros) and decimal exponent of the first
/// digit, from Rust's `{:e}` (or `{:.N e}`) output.
fn scientific(text: &str) -> Option<(Vec<u8>, i32)> {
    let (mantissa, exponent) = text.split_once('e')?;
    let exponent: i32 = exponent.parse().ok()?;
    let mut digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    Some((digits, exponent))
}

/// The `f64` that `0.DIGITS × 10^(exponent + 1)` reads as.
fn read_back(digits: &[u8], exponent: i32) -> Option<f64> {
    let (first, rest) = digits.split_first()?;
    let mut text = String::with_capacity(digits.len() + 8);
    text.push(char::from(*first));
    if !rest.is_empty() {
        text.push('.');
        text.push_str(std::str::from_utf8(rest).ok()?);
    }
    text.push('e');
    text.push_str(&exponent.to_string());
    text.parse().ok()
}

/// Adds one unit in the last place of `digits`; the result has no trailing zeros.
fn increment(digits: &[u8], exponent: i32) -> (Vec<u8>, i32) {
    let mut out = digits.to_vec();
    let mut exponent = exponent;
    let mut carry = true;
    for digit in out.iter_mut().rev() {
        if *digit == b'9' {
            *digit = b'0';
        } else {
            *digit += 1;
            carry = false;
            break;
        }
    }
    if carry {
        out.insert(0, b'1');
        exponent += 1;
    }
    while out.len() > 1 && out.last() == Some(&b'0') {
        out.pop();
    }
    (out, exponent)
}

/// Removes one unit in the last place of `digits` (`None` if that reaches zero).
fn decrement(digits: &[u8], exponent: i32) -> Option<(Vec<u8>, i32)> {
    let mut out = digits.to_vec();
    let mut exponent = exponent;
    for digit in out.iter_mut().rev() {
        if *digit == b'0' {
            *digit = b'9';
        } else {
            *digit -= 1;
            break;
        }
    }
    while out.first() == Some(&b'0') {
        out.remove(0);
        exponent -= 1;
    }
    while out.len() > 1 && out.last() == Some(&b'0') {
        out.pop();
    }
    (!out.is_empty()).then_some((out, exponent))
}

/// Python's repr digits of a positive finite `f64`.
fn python_digits(value: f64) -> (Vec<u8>, i32) {
    let Some((digits, exponent)) = scientific(&format!("{value:e}")) else {
        return (b"0".to_vec(), 0);
    };
    // Does another string of the same length also read back as `value`? Only then can the
    // choice differ from Python's, and only on an exact tie.
    let up = increment(&digits, exponent);
    let down = decrement(&digits, exponent);
    let ambiguous = read_back(&up.0, up.1) == Some(value)
        || down
            .as_ref()
            .is_some_and(|(d, e)| read_back(d, *e) == Some(value));
    if !ambiguous {
        return (digits, exponent);
    }
    let last_place = exponent - i32::try_from(digits.len()).unwrap_or(0) + 1;
    // A few digits past the candidates usually settle it; an apparent exact tie needs the whole
    // expansion (an f64 has at most 767 significant decimal digits).
    let rounded = match round_to_place(value, last_place, digits.len() + 24, false) {
        Some(Rounded::Undecided) => round_to_place(value, last_place, 1100, true),
        other => other,
    };
    match rounded {
        Some(Rounded::Done(candidate, candidate_exponent))
            if read_back(&candidate, candidate_exponent) == Some(value) =>
        {
            (candidate, candidate_exponent)
        }
        _ => (digits, exponent),
    }
}

enum Rounded {
    Done(Vec<u8>, i32),
    Undecided,
}

/// The exact value of `value` rounded to the decimal place 10^`last_place`, nearest, ties to an
/// even last digit, read from its expansion to `precision` digits. With `exact` false, a
/// remainder that prints as exactly one half may be a rounding of the true remainder, so the
/// answer is [`Rounded::Undecided`].
fn round_to_place(value: f64, last_place: i32, precision: usize, exact: bool) -> Option<Rounded> {
    let (expansion, expansion_exponent) = scientific(&format!("{value:.precision$e}"))?;
    let cut = usize::try_from(expansion_exponent - last_place).ok()?;
    // Zeros were trimmed from the expansion; put back any the cut reaches.
    let mut truncated: Vec<u8> = expansion.iter().copied().take(cut + 1).collect();
    truncated.resize(cut + 1, b'0');
    let rest = expansion.get(cut + 1..).unwrap_or_default();
    let last_even = truncated
        .last()
        .is_some_and(|d| (d - b'0').is_multiple_of(2));
    let round_up = match rest {
        [] => false,
        [d, ..] if *d > b'5' => true,
        [d, ..] if *d < b'5' => false,
        // Exactly one half: nothing follows the 5 (trailing zeros were trimmed).
        [_] if exact => !last_even,
        [_] => return Some(Rounded::Undecided),
        _ => true,
    };
    let (digits, exponent) = if round_up {
        increment(&truncated, expansion_exponent)
    } else {
        while truncated.len() > 1 && truncated.last() == Some(&b'0') {
            truncated.pop();
        }
        (truncated, expansion_exponent)
    };
    Some(Rounded::Done(digits, exponent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(value: &Value) -> String {
        String::from_utf8(canonical_json(value)).unwrap()
    }

    #[test]
    fn keys_are_sorted_by_code_point_at_every_depth() {
        let value = json!({"b": 1, "a": {"d": [1, {"z": 1, "y": 2}], "c": "x"}, "B": null});
        assert_eq!(
            canon(&value),
            r#"{"B":null,"a":{"c":"x","d":[1,{"y":2,"z":1}]},"b":1}"#
        );
        // Code point order, not UTF-16 order: U+FFFF sorts before U+1F600.
        let value = json!({"\u{1F600}": 1, "\u{FFFF}": 2});
        assert_eq!(canon(&value), r#"{"\uffff":2,"\ud83d\ude00":1}"#);
    }

    #[test]
    fn strings_are_escaped_as_python_ensure_ascii_does() {
        let value = json!("a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é€😀/");
        assert_eq!(
            canon(&value),
            r#""a\"b\\c\n\r\t\b\f\u0001\u001f\u007f\u00e9\u20ac\ud83d\ude00/""#
        );
    }

    #[test]
    fn floats_follow_python_repr() {
        for (value, expected) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.30000000000000004, "0.30000000000000004"),
            (-2.5e-7, "-2.5e-07"),
            // Exact ties between two shortest strings: Python takes the even last digit,
            // Rust's `{:e}` rounds up.
            (-(1113178120592002.0 + 0.25), "-1113178120592002.2"),
            (233891771783429.0 + 0.625, "233891771783429.62"),
        ] {
            assert_eq!(python_float_repr(value), expected, "{value:e}");
        }
        assert_eq!(
            format!("{:e}", 233891771783429.0 + 0.625),
            "2.3389177178342963e14"
        );
    }
}
