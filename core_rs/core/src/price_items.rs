//! The odds cache's price-script items (`services/inplay/adapters/redis_odds.py`, layout above
//! `_WRITE_PRICES`), encoded for a whole batch in one call: the items array with each market's body JSON
//! inside it as a string.
//!
//! **Guarantee:** the text is byte for byte what the Python reference writes (`_price_item`, `encode_body`
//! and `_pack` through orjson: compact separators, keys in the reference's order, UTF-8 kept as is, the
//! escapes below). `tests/unit/test_native_encoders.py` holds the two to that with hypothesis, so pods running
//! either path write the same bodies and the Lua script reads the same items.

use crate::json_out::{push_i64, push_json_str, push_key, push_str_at, push_u64, Depth};

/// One selection of a market body: the book's id, its name, and the decimal odds `num/den`.
#[derive(Debug, Clone)]
pub struct Selection<S> {
    pub id: S,
    pub name: S,
    pub num: u64,
    pub den: u64,
}

/// One feed price write (`inplay.ports.PriceWrite`) with the version of the state the writer holds for
/// its market (0: none).
#[derive(Debug, Clone)]
pub struct PriceItem<S> {
    pub market_id: S,
    pub event_id: S,
    pub sport: S,
    pub market_type: S,
    pub name: S,
    pub in_play: bool,
    pub selections: Vec<Selection<S>>,
    pub source_ts_ms: i64,
    pub updated_at_ms: i64,
    pub source: S,
    pub suspend_reason: S,
    pub correction: bool,
    /// The provider's own time; 0 stands for `source_ts_ms` (as in the reference).
    pub provider_ts_ms: i64,
    pub route_primary: S,
    pub held_version: i64,
}

/// The market body stored in the cache hash's `b` field (`encode_body`), at `depth`.
pub fn encode_body<S: AsRef<str>>(out: &mut String, item: &PriceItem<S>, depth: Depth) {
    let text = |out: &mut String, key: &str, value: &str| {
        push_key(out, key, depth);
        push_str_at(out, value, depth);
    };
    out.push('{');
    text(out, "m", item.market_id.as_ref());
    out.push(',');
    text(out, "e", item.event_id.as_ref());
    out.push(',');
    text(out, "sp", item.sport.as_ref());
    out.push(',');
    text(out, "t", item.market_type.as_ref());
    out.push(',');
    text(out, "n", item.name.as_ref());
    out.push(',');
    push_key(out, "ip", depth);
    out.push(if item.in_play { '1' } else { '0' });
    out.push(',');
    push_key(out, "s", depth);
    out.push('[');
    for (k, s) in item.selections.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push('[');
        push_str_at(out, s.id.as_ref(), depth);
        out.push(',');
        push_str_at(out, s.name.as_ref(), depth);
        out.push(',');
        push_u64(out, s.num);
        out.push(',');
        push_u64(out, s.den);
        out.push(']');
    }
    out.push_str("],");
    push_key(out, "u", depth);
    push_i64(out, item.updated_at_ms);
    out.push(',');
    text(out, "src", item.source.as_ref());
    out.push('}');
}

/// The items array of one price-script call (`_pack([_price_item(w, body, held) ...])`): each body is
/// written nested, as the string it is inside the item, in the same pass.
pub fn encode_price_items<S: AsRef<str>>(items: &[PriceItem<S>]) -> String {
    let mut out = String::with_capacity(items.len() * 420 + 2);
    out.push('[');
    for (k, it) in items.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push('[');
        push_json_str(&mut out, it.market_id.as_ref());
        out.push(',');
        push_json_str(&mut out, it.event_id.as_ref());
        out.push(',');
        push_json_str(&mut out, it.sport.as_ref());
        out.push_str(",\"");
        push_i64(&mut out, it.source_ts_ms); // a decimal string: digits and '-' need no escape
        out.push_str("\",\"");
        encode_body(&mut out, it, Depth::Nested);
        out.push_str("\",");
        push_json_str(&mut out, it.suspend_reason.as_ref());
        out.push_str(if it.correction { ",1,\"feed\",0,0,\"\",\"" } else { ",0,\"feed\",0,0,\"\",\"" });
        push_i64(&mut out, if it.provider_ts_ms != 0 { it.provider_ts_ms } else { it.source_ts_ms });
        out.push_str("\",");
        push_json_str(&mut out, it.source.as_ref());
        out.push(',');
        push_json_str(&mut out, it.route_primary.as_ref());
        out.push(',');
        push_i64(&mut out, it.held_version);
        out.push(']');
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_item_in_the_reference_layout() {
        let item = PriceItem {
            market_id: "m1",
            event_id: "e1",
            sport: "football",
            market_type: "1X2",
            name: "Match \"result\"",
            in_play: true,
            selections: vec![Selection { id: "h", name: "Home", num: 21, den: 10 }],
            source_ts_ms: 5,
            updated_at_ms: 6,
            source: "alpha",
            suspend_reason: "",
            correction: false,
            provider_ts_ms: 0,
            route_primary: "alpha",
            held_version: 3,
        };
        let want = concat!(
            r#"[["m1","e1","football","5","{\"m\":\"m1\",\"e\":\"e1\",\"sp\":\"football\",\"t\":\"1X2\","#,
            r#"\"n\":\"Match \\\"result\\\"\",\"ip\":1,\"s\":[[\"h\",\"Home\",21,10]],\"u\":6,\"src\":\"alpha\"}","#,
            r#""",0,"feed",0,0,"","5","alpha","alpha",3]]"#
        );
        assert_eq!(encode_price_items(&[item]), want);
    }
}
