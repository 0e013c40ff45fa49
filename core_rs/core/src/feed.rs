//! A fast reader of the alpha provider's price message (docs/odds-pipeline.md, "Feed ingestion"), the
//! firehose of the odds feed:
//!
//! `{"type":"odds","seq":N,"ts":"YYYY-MM-DDTHH:MM:SS.mmmZ","correction":B,"event":{"id":S},`
//! `"market":{"id":S,"prices":[{"id":S,"odds":"D.DD"},...]}}` (keys in any order, other keys ignored).
//!
//! Guarantee: it **accepts or declines**. It accepts only a message that the Python adapter
//! (`inplay.domain.feed.providers.AlphaAdapter`) accepts as a price message, and then gives the same
//! fields; anything else (another type, an escape in any string, a float or large number, a duplicate key,
//! a bad field, malformed JSON, deep nesting) is declined (`None`) and read by the Python adapter, which
//! gives the rejection and its reason. The property test `tests/unit/test_feed_fast_reader.py` checks
//! "declines or agrees" against the adapter.

use crate::odds::Odds;

/// A price message as read: (selection ref, odds) in message order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlphaPrices<'a> {
    pub seq: u64,
    pub ts_ms: i64,
    pub correction: bool,
    pub event_ref: &'a str,
    pub market_ref: &'a str,
    pub prices: Vec<(&'a str, Odds)>,
}

const MAX_DEPTH: usize = 32;

/// A JSON value, with strings borrowed from the payload (no escapes: a backslash declines the message).
enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Null,
    List(Vec<Value<'a>>),
    Object(Vec<(&'a str, Value<'a>)>),
    /// A value read only for its syntax (fractions, exponents): never a field the reader uses.
    Other,
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_space();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.text[self.at..].starts_with(word).then(|| self.at += word.len())
    }

    fn value(&mut self, depth: usize) -> Option<Value<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_space();
        match self.peek()? {
            b'"' => self.string().map(Value::Str),
            b'{' => self.object(depth),
            b'[' => self.list(depth),
            b't' => self.literal("true").map(|_| Value::Bool(true)),
            b'f' => self.literal("false").map(|_| Value::Bool(false)),
            b'n' => self.literal("null").map(|_| Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn string(&mut self) -> Option<&'a str> {
        self.at += 1; // the opening quote
        let start = self.at;
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.at) {
            match b {
                b'"' => {
                    self.at += 1;
                    return Some(&self.text[start..self.at - 1]);
                }
                b'\\' | 0..=0x1f => return None, // an escape (declined) or a raw control character (invalid)
                _ => self.at += 1,
            }
        }
        None
    }

    /// Skips a run of ASCII digits; returns how many.
    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Option<Value<'a>> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let first = self.peek();
        let int_len = self.digits();
        if int_len == 0 || (int_len > 1 && first == Some(b'0')) {
            return None; // no digits, or a leading zero: not JSON
        }
        let mut plain = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
            plain = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
            plain = false;
        }
        if !plain {
            return Some(Value::Other);
        }
        // Beyond i64: declined (the JSON library's range is not this reader's to guess).
        self.text[start..self.at].parse::<i64>().ok().map(Value::Int)
    }

    fn list(&mut self, depth: usize) -> Option<Value<'a>> {
        self.at += 1;
        // Capacities fit the price message (3-way markets, 6 top-level keys): no regrowth per message.
        let mut items = Vec::with_capacity(4);
        self.skip_space();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(Value::List(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_space();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(Value::List(items));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value<'a>> {
        self.at += 1;
        let mut fields: Vec<(&'a str, Value<'a>)> = Vec::with_capacity(8);
        self.skip_space();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Value::Object(fields));
        }
        loop {
            self.skip_space();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            if fields.iter().any(|(k, _)| *k == key) {
                return None; // a duplicate key: which one counts is the JSON library's rule, not ours
            }
            self.eat(b':')?;
            let value = self.value(depth + 1)?;
            fields.push((key, value));
            self.skip_space();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(Value::Object(fields));
                }
                _ => return None,
            }
        }
    }
}

fn field<'v, 'a>(fields: &'v [(&'a str, Value<'a>)], key: &str) -> Option<&'v Value<'a>> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn object<'v, 'a>(value: Option<&'v Value<'a>>) -> Option<&'v [(&'a str, Value<'a>)]> {
    match value? {
        Value::Object(fields) => Some(fields),
        _ => None,
    }
}

/// A non-empty string field.
fn non_empty<'a>(fields: &[(&'a str, Value<'a>)], key: &str) -> Option<&'a str> {
    match field(fields, key)? {
        Value::Str(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Epoch ms of `YYYY-MM-DDTHH:MM:SS.mmmZ` (the form the providers send; any other form is declined).
pub fn canonical_utc_ms(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, &d| d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, milli) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1_000 + milli)
}

/// The price message in `payload`, or `None` when this reader declines it (see the module's guarantee).
pub fn read_alpha_prices(payload: &[u8]) -> Option<AlphaPrices<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut reader = Reader { text, at: 0 };
    reader.skip_space();
    if reader.peek()? != b'{' {
        return None;
    }
    let doc = reader.value(0)?;
    reader.skip_space();
    if reader.at != text.len() {
        return None; // trailing bytes: not one JSON document
    }
    let Value::Object(doc) = doc else { return None };
    let seq = match field(&doc, "seq")? {
        Value::Int(n) if *n >= 0 => *n as u64,
        _ => return None,
    };
    if !matches!(field(&doc, "type")?, Value::Str("odds")) {
        return None;
    }
    let ts_ms = match field(&doc, "ts")? {
        Value::Str(ts) => canonical_utc_ms(ts)?,
        _ => return None,
    };
    let event_ref = non_empty(object(field(&doc, "event"))?, "id")?;
    let correction = match field(&doc, "correction") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return None, // null included: the adapter refuses it
    };
    let market = object(field(&doc, "market"))?;
    let Value::List(rows) = field(market, "prices")? else { return None };
    if rows.is_empty() {
        return None;
    }
    let mut prices = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Object(price) = row else { return None };
        let sel = non_empty(price, "id")?;
        let Value::Str(odds) = field(price, "odds")? else { return None };
        let odds = Odds::from_decimal_str(odds).ok()?;
        prices.push((sel, odds));
    }
    Some(AlphaPrices { seq, ts_ms, correction, event_ref, market_ref: non_empty(market, "id")?, prices })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = br#"{"type":"odds","seq":5,"ts":"2026-03-01T00:00:00.123Z","correction":false,"event":{"id":"ev"},"market":{"id":"mk","prices":[{"id":"h","odds":"2.50"},{"id":"a","odds":"1.60"}]}}"#;

    #[test]
    fn reads_the_canonical_price_message() {
        let m = read_alpha_prices(MSG).unwrap();
        assert_eq!(
            (m.seq, m.ts_ms, m.correction, m.event_ref, m.market_ref),
            (5, 1_772_323_200_123, false, "ev", "mk")
        );
        assert_eq!(m.prices, vec![("h", Odds::new(5, 2).unwrap()), ("a", Odds::new(8, 5).unwrap())]);
    }

    #[test]
    fn declines_what_it_is_not_sure_of() {
        let variants = [
            r#""seq":5"#.replace("5", "5.0"),
            r#""seq":5"#.replace("5", "-5"),
            r#""odds":"2.50""#.replace("2.50", "1.00"),
            r#""id":"h""#.replace("h", "h\\u0041"),
            r#""type":"odds""#.replace("odds", "bet_stop"),
            r#""ts":"2026-03-01T00:00:00.123Z""#.replace("03-01", "02-30"),
            r#""correction":false"#.replace("false", "0"),
            r#""event":{"id":"ev"}"#.replace("ev", ""),
        ];
        let text = std::str::from_utf8(MSG).unwrap();
        let originals = [
            r#""seq":5"#,
            r#""seq":5"#,
            r#""odds":"2.50""#,
            r#""id":"h""#,
            r#""type":"odds""#,
            r#""ts":"2026-03-01T00:00:00.123Z""#,
            r#""correction":false"#,
            r#""event":{"id":"ev"}"#,
        ];
        for (original, variant) in originals.iter().zip(variants.iter()) {
            let changed = text.replacen(original, variant, 1);
            assert_ne!(changed, text);
            assert!(read_alpha_prices(changed.as_bytes()).is_none(), "{changed}");
        }
        assert!(read_alpha_prices(&MSG[..MSG.len() - 1]).is_none());
        assert!(read_alpha_prices(format!("{text} x").as_bytes()).is_none());
        assert!(read_alpha_prices(text.replacen(r#""seq":5"#, r#""seq":5,"seq":6"#, 1).as_bytes()).is_none());
    }

    #[test]
    fn canonical_times_agree_with_the_calendar() {
        assert_eq!(canonical_utc_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(canonical_utc_ms("2000-02-29T23:59:59.999Z"), Some(951_868_799_999));
        assert_eq!(canonical_utc_ms("1900-02-29T00:00:00.000Z"), None);
        assert_eq!(canonical_utc_ms("2026-13-01T00:00:00.000Z"), None);
    }
}
