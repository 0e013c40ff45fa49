//! Compact JSON text as orjson writes it (what the Python reference paths encode with), for the core's
//! encoders of whole batches (`price_items`, `odds_record`): the same bytes from either side.
//!
//! Strings are escaped as orjson escapes them: `"` and `\`, the short forms `\b \t \n \f \r`, every other
//! control character below U+0020 as `\u00xx` (lower-case hex); all else as is (U+007F and non-ASCII too).
//! A document can also be written *nested*: as the text of a JSON string inside another document (the
//! cache body inside the price script's items), escaped once more in the same pass.

/// Where text goes: into the document itself, or into a JSON string inside it (escaped once more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Top,
    Nested,
}

impl Depth {
    /// A quotation mark at this depth.
    pub fn quote(self) -> &'static str {
        match self {
            Depth::Top => "\"",
            Depth::Nested => "\\\"",
        }
    }
}

/// The bytes a JSON string must escape.
const ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Appends `s` as a JSON string at `depth`. The bytes escaped are ASCII, so every cut is at a char boundary.
pub fn push_str_at(out: &mut String, s: &str, depth: Depth) {
    out.push_str(depth.quote());
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if ESCAPE[usize::from(b)] {
            out.push_str(&s[start..i]);
            push_escape(out, b, depth);
            start = i + 1;
        }
    }
    out.push_str(&s[start..]);
    out.push_str(depth.quote());
}

/// Appends `s` as a JSON string.
pub fn push_json_str(out: &mut String, s: &str) {
    push_str_at(out, s, Depth::Top);
}

fn push_escape(out: &mut String, b: u8, depth: Depth) {
    let nested = depth == Depth::Nested;
    out.push_str(if nested { "\\\\" } else { "\\" }); // the escape's backslash (itself escaped when nested)
    match b {
        b'"' => out.push_str(if nested { "\\\"" } else { "\"" }),
        b'\\' => out.push_str(if nested { "\\\\" } else { "\\" }),
        0x08 => out.push('b'),
        b'\t' => out.push('t'),
        b'\n' => out.push('n'),
        0x0c => out.push('f'),
        b'\r' => out.push('r'),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Appends `"name":` at `depth` (names are plain ASCII: nothing to escape).
pub fn push_key(out: &mut String, name: &str, depth: Depth) {
    out.push_str(depth.quote());
    out.push_str(name);
    out.push_str(depth.quote());
    out.push(':');
}

/// Appends `n` in decimal (std's formatting machinery costs several times this per number).
pub fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Digits only: the check cannot fail, and one push_str costs less than a push per digit.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// Appends `n` in decimal.
pub fn push_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_u64(out, n.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a\"b\\c\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}é/";

    #[test]
    fn escapes_as_orjson_does() {
        let mut out = String::new();
        push_json_str(&mut out, HOSTILE);
        assert_eq!(out, "\"a\\\"b\\\\c\\b\\t\\n\\u000b\\f\\r\\u001f\u{7f}é/\"");
    }

    #[test]
    fn nested_is_the_top_text_escaped_once_more() {
        let mut top = String::new();
        push_json_str(&mut top, HOSTILE);
        let mut once_more = String::new();
        push_json_str(&mut once_more, &top);
        let mut nested = String::from("\"");
        push_str_at(&mut nested, HOSTILE, Depth::Nested);
        nested.push('"');
        assert_eq!(nested, once_more);
    }

    #[test]
    fn integers_as_display_writes_them() {
        for n in [0, 7, -7, 10, 1_772_323_200_123, i64::MIN, i64::MAX] {
            let mut out = String::new();
            push_i64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let mut out = String::new();
        push_u64(&mut out, u64::MAX);
        assert_eq!(out, u64::MAX.to_string());
    }
}
