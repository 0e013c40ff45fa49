//! The `inplay.odds.v1` Kafka record of one applied market state with the change-log entries of that write
//! (`services/inplay/domain/markets.py`, `odds_json`), encoded for a whole batch in one call.
//!
//! **Guarantee:** each record is byte for byte what the Python reference writes through orjson (keys in the
//! reference's order; a change entry is the object of `MarketChange`'s fields in declaration order).
//! `tests/unit/test_native_encoders.py` holds the two to that with hypothesis.

use crate::json_out::{push_i64, push_json_str, push_u64};

/// One change-log entry (`inplay.model.MarketChange`).
#[derive(Debug, Clone)]
pub struct Change<S> {
    pub market_id: S,
    pub selection_id: S,
    pub kind: S,
    pub old_value: S,
    pub new_value: S,
    pub source: S,
    pub reason: S,
    pub version: i64,
    pub at_ms: i64,
}

/// One applied state (`inplay.model.MarketState`, the fields the record carries) and its entries.
#[derive(Debug, Clone)]
pub struct OddsRecord<S> {
    pub market_id: S,
    pub event_id: S,
    pub sport: S,
    pub market_type: S,
    /// The status's name (`ACTIVE`, `SUSPENDED`, ...), as the reference writes it.
    pub status: S,
    pub status_reason: S,
    pub version: i64,
    /// (selection id, decimal odds numerator, denominator)
    pub selections: Vec<(S, u64, u64)>,
    pub updated_at_ms: i64,
    pub source: S,
    pub changes: Vec<Change<S>>,
}

fn push_change<S: AsRef<str>>(out: &mut String, c: &Change<S>) {
    out.push_str("{\"market_id\":");
    push_json_str(out, c.market_id.as_ref());
    out.push_str(",\"selection_id\":");
    push_json_str(out, c.selection_id.as_ref());
    out.push_str(",\"kind\":");
    push_json_str(out, c.kind.as_ref());
    out.push_str(",\"old_value\":");
    push_json_str(out, c.old_value.as_ref());
    out.push_str(",\"new_value\":");
    push_json_str(out, c.new_value.as_ref());
    out.push_str(",\"source\":");
    push_json_str(out, c.source.as_ref());
    out.push_str(",\"reason\":");
    push_json_str(out, c.reason.as_ref());
    out.push_str(",\"version\":");
    push_i64(out, c.version);
    out.push_str(",\"at_ms\":");
    push_i64(out, c.at_ms);
    out.push('}');
}

/// One record's JSON text, appended to `out`.
pub fn encode_odds_record<S: AsRef<str>>(out: &mut String, r: &OddsRecord<S>) {
    out.push_str("{\"market_id\":");
    push_json_str(out, r.market_id.as_ref());
    out.push_str(",\"event_id\":");
    push_json_str(out, r.event_id.as_ref());
    out.push_str(",\"sport\":");
    push_json_str(out, r.sport.as_ref());
    out.push_str(",\"market_type\":");
    push_json_str(out, r.market_type.as_ref());
    out.push_str(",\"status\":");
    push_json_str(out, r.status.as_ref());
    out.push_str(",\"status_reason\":");
    push_json_str(out, r.status_reason.as_ref());
    out.push_str(",\"version\":");
    push_i64(out, r.version);
    out.push_str(",\"selections\":[");
    for (k, (id, num, den)) in r.selections.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push('[');
        push_json_str(out, id.as_ref());
        out.push(',');
        push_u64(out, *num);
        out.push(',');
        push_u64(out, *den);
        out.push(']');
    }
    out.push_str("],\"updated_at_ms\":");
    push_i64(out, r.updated_at_ms);
    out.push_str(",\"source\":");
    push_json_str(out, r.source.as_ref());
    out.push_str(",\"changes\":[");
    for (k, c) in r.changes.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        push_change(out, c);
    }
    out.push_str("]}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_in_the_reference_layout() {
        let change = Change {
            market_id: "m",
            selection_id: "h",
            kind: "PRICE",
            old_value: "",
            new_value: "2.10 (21/10)",
            source: "alpha",
            reason: "FEED",
            version: 2,
            at_ms: 9,
        };
        let record = OddsRecord {
            market_id: "m",
            event_id: "e",
            sport: "football",
            market_type: "1X2",
            status: "ACTIVE",
            status_reason: "",
            version: 2,
            selections: vec![("h", 21, 10)],
            updated_at_ms: 9,
            source: "alpha",
            changes: vec![change],
        };
        let mut out = String::new();
        encode_odds_record(&mut out, &record);
        let want = concat!(
            r#"{"market_id":"m","event_id":"e","sport":"football","market_type":"1X2","status":"ACTIVE","#,
            r#""status_reason":"","version":2,"selections":[["h",21,10]],"updated_at_ms":9,"source":"alpha","#,
            r#""changes":[{"market_id":"m","selection_id":"h","kind":"PRICE","old_value":"","#,
            r#""new_value":"2.10 (21/10)","source":"alpha","reason":"FEED","version":2,"at_ms":9}]}"#
        );
        assert_eq!(out, want);
    }
}
