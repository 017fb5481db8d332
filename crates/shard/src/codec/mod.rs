//! The compact binary form of what a shard stores and replicates: execution records, batches
//! of history events, and Raft entries ([`crate::request::ShardRequest`]).
//!
//! JSON cost a finished 10-state execution about 11 KB before sled's own overhead: every
//! field name in every record and event, the execution's ARN spelled out beside the machine
//! ARN it derives from, one sled key per event, and a Raft entry holding all of it again as
//! JSON text. This form writes fields in a fixed order, integers as varints, times as
//! deltas, event types as numbers, the keys of event details from a dictionary, and a
//! write's events as one value (`docs/benchmarks.md`, "Retention and disk space").
//!
//! Every value starts with a format byte. [`BINARY`] is this form; a value that starts with
//! `{` or `[` is the JSON an earlier version wrote, and still reads, so stores and snapshots
//! of earlier versions open unchanged. A change to the layout takes a new format byte.
//!
//! ```text
//! (listing items: see [`encode_item`])
//! record  := 0x01 varint(id) flags(u8) [str(arn)] str(name) str(machine) opt(str) opt(str)
//!            u64be(definition) str(input) u8(status) zigzag(start) opt(zigzag(stop-start))
//!            opt(str output) opt(str error) opt(str cause) varint(redrive_count)
//!            opt(zigzag redrive_ms) varint(last_event_id) varint(n) (varint zigzag)^n
//!            opt(json tasks) opt(str state) opt(json outbox) varint(next_seq)
//!            opt(json parent) opt(json map_runs) opt(varint retention) opt(u64be request)
//!          | 0x02 (the same fields) varint(n) (varint(task) u64be(request))^n
//!                                         (a record that remembers answered tasks, n > 0)
//! events  := 0x01 varint(n) event^n      (ids and times as deltas from the event before)
//! event   := zigzag(id-prev id) varint(id-previous_event_id) zigzag(time-prev time)
//!            varint(type) opt(object)
//! live    := 0x01 str(arn) opt(varint(n) (varint(timer) zigzag(due))^n)
//! value   := 0 null | 1 false | 2 true | 3 str(number text) | 4 str | 5 varint(n) value^n
//!          | 6 varint(n) (key value)^n
//! key     := varint(0) str | varint(i) (KEYS[i-1])
//! opt(x)  := 0 | 1 x          str := varint(len) bytes
//! ```

use crate::{Error, Result};
use serde_json::{Map, Number, Value};

mod stored;

use stored::{derived_arn, F_ARN_DERIVED};

pub(crate) use stored::status_code;
pub use stored::{
    decode_events, decode_item, decode_live, decode_ops, decode_record, encode_events, encode_item,
    encode_live, encode_ops, encode_record, op_len, LiveEntry, RECORD_ANSWERS,
};

/// The format byte of this encoding.
pub const BINARY: u8 = 0x01;

/// Keys of event details written as one byte. Append only: a key's position is its code.
const KEYS: &[&str] = &[
    "name",
    "input",
    "inputDetails",
    "output",
    "outputDetails",
    "truncated",
    "error",
    "cause",
    "roleArn",
    "resource",
    "resourceType",
    "parameters",
    "timeoutInSeconds",
    "heartbeatInSeconds",
    "index",
    "length",
    "mapRunArn",
    "taskToken",
    "redriveCount",
    "redriveStatus",
    "stateMachineAliasArn",
    "stateMachineVersionArn",
    "activityArn",
    "workerName",
    "region",
    "taskCredentials",
    "evaluationFailedEventDetails",
    "assignedVariables",
    "assignedVariablesDetails",
    "location",
];

// ---------------------------------------------------------------------------------- writer

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u8(&mut self, b: u8) {
        self.0.push(b);
    }

    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn zigzag(&mut self, n: i64) {
        self.varint(((n << 1) ^ (n >> 63)) as u64);
    }

    fn fixed(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut W, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
    }

    /// A rarely set, structured field: its JSON, when it has any content.
    fn json<T: serde::Serialize>(&mut self, v: &T, empty: bool) -> Result<()> {
        if empty {
            self.u8(0);
        } else {
            self.u8(1);
            self.bytes(&serde_json::to_vec(v)?);
        }
        Ok(())
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.u8(0),
            Value::Bool(false) => self.u8(1),
            Value::Bool(true) => self.u8(2),
            Value::Number(n) => {
                self.u8(3);
                self.str(&n.to_string());
            }
            Value::String(s) => {
                self.u8(4);
                self.str(s);
            }
            Value::Array(a) => {
                self.u8(5);
                self.varint(a.len() as u64);
                for v in a {
                    self.value(v);
                }
            }
            Value::Object(m) => {
                self.u8(6);
                self.object(m);
            }
        }
    }

    fn object(&mut self, m: &Map<String, Value>) {
        self.varint(m.len() as u64);
        for (k, v) in m {
            match KEYS.iter().position(|known| known == k) {
                Some(i) => self.varint(i as u64 + 1),
                None => {
                    self.varint(0);
                    self.str(k);
                }
            }
            self.value(v);
        }
    }
}

// ---------------------------------------------------------------------------------- reader

struct R<'a> {
    b: &'a [u8],
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("a stored value does not decode: {what}"))
}

/// Nesting allowed in a stored JSON value: deeper than any definition's data can be.
const MAX_DEPTH: usize = 512;

impl<'a> R<'a> {
    fn u8(&mut self) -> Result<u8> {
        let (&b, rest) = self.b.split_first().ok_or_else(|| corrupt("truncated"))?;
        self.b = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(corrupt("a varint over 64 bits"))
    }

    fn zigzag(&mut self) -> Result<i64> {
        let n = self.varint()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    fn fixed(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(
            b.try_into().map_err(|_| corrupt("u64"))?,
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = usize::try_from(self.varint()?).map_err(|_| corrupt("a length"))?;
        self.take(n)
    }

    fn str(&mut self) -> Result<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt("a string that is not UTF-8"))
    }

    fn opt<T>(&mut self, f: impl FnOnce(&mut R<'a>) -> Result<T>) -> Result<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(corrupt("an option tag")),
        }
    }

    fn json<T: serde::de::DeserializeOwned + Default>(&mut self) -> Result<T> {
        Ok(self
            .opt(|r| Ok(serde_json::from_slice(r.bytes()?)?))?
            .unwrap_or_default())
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(corrupt("nesting too deep"));
        }
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => {
                let text = self.str()?;
                Value::Number(text.parse::<Number>().map_err(|_| corrupt("a number"))?)
            }
            4 => Value::String(self.str()?),
            5 => {
                let n = self.count()?;
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.value(depth + 1)?);
                }
                Value::Array(a)
            }
            6 => Value::Object(self.object(depth + 1)?),
            _ => return Err(corrupt("a value tag")),
        })
    }

    fn object(&mut self, depth: usize) -> Result<Map<String, Value>> {
        let n = self.count()?;
        let mut m = Map::with_capacity(n);
        for _ in 0..n {
            let k = match self.varint()? {
                0 => self.str()?,
                i => KEYS
                    .get(usize::try_from(i - 1).unwrap_or(usize::MAX))
                    .ok_or_else(|| corrupt("a key code"))?
                    .to_string(),
            };
            let v = self.value(depth)?;
            m.insert(k, v);
        }
        Ok(m)
    }

    /// A count of items that follow: each takes at least a byte, so a count larger than what
    /// is left is damage, not a reason to allocate.
    fn count(&mut self) -> Result<usize> {
        let n = self.varint()?;
        if n > self.b.len() as u64 {
            return Err(corrupt("a count larger than the value"));
        }
        Ok(n as usize)
    }

    /// An execution's ARN (unless derived, per `flags`), name and machine ARN.
    fn names(&mut self, flags: u8) -> Result<(String, String, String)> {
        let arn = if flags & F_ARN_DERIVED == 0 {
            Some(self.str()?)
        } else {
            None
        };
        let name = self.str()?;
        let machine = self.str()?;
        let arn = match arn {
            Some(a) => a,
            None => derived_arn(&machine, &name)
                .ok_or_else(|| corrupt("an ARN to derive from a machine ARN without one"))?,
        };
        Ok((arn, name, machine))
    }

    fn end(&self) -> Result<()> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(corrupt("bytes after the end"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ExecRecord, Status};
    use crate::request::{Expiry, ShardOp};
    use serde_json::json;
    use trellis_asl::{EventType, HistoryEvent};

    fn record() -> ExecRecord {
        let mut r = ExecRecord::new(
            7,
            "arn:aws:states:us-east-1:000000000000:execution:Orders:run-1".into(),
            "run-1".into(),
            "arn:aws:states:us-east-1:000000000000:stateMachine:Orders".into(),
            0xfedc_ba98_7654_3210,
            r#"{"n":1.50,"big":12345678901234567890}"#.into(),
            1_796_160_759_192,
        );
        r.status = Status::Failed;
        r.stop_ms = Some(1_796_160_759_300);
        r.error = Some("States.TaskFailed".into());
        r.cause = Some("boom".into());
        r.last_event_id = 22;
        r.timers.insert(3, 1_796_160_760_000);
        r.state = Some(serde_json::value::RawValue::from_string(r#"{"a":[1,2]}"#.into()).unwrap());
        r.request_id = u64::MAX - 1;
        r.retention_ms = Some(60_000);
        r.redrive_count = 2;
        r.redrive_ms = Some(1_796_160_759_250);
        r.paused = true;
        r.send(crate::outbox::Message::StopChild {
            child_arn: "c".into(),
        });
        r.answered(4, 0xabcd);
        r
    }

    fn same(a: &ExecRecord, b: &ExecRecord) {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
    }

    #[test]
    fn a_live_entry_holds_the_timers_of_a_waiting_execution_only() {
        let mut r = record();
        r.status = Status::Running;
        r.stop_ms = None;
        r.outbox.clear();
        r.timers.insert(1, -5);
        let e = decode_live(&encode_live(&r)).unwrap();
        assert_eq!(e.arn, r.arn);
        assert_eq!(
            e.waiting.as_deref(),
            Some(&[(1, -5), (3, 1_796_160_760_000)][..])
        );
        r.paused = true;
        assert!(decode_live(&encode_live(&r)).unwrap().waiting.is_some());
        r.express = true;
        let e = decode_live(&encode_live(&r)).unwrap();
        assert_eq!((e.arn.as_str(), e.waiting), (r.arn.as_str(), None));
        // Damaged entries are errors, not panics.
        let bin = encode_live(&record());
        for n in 0..bin.len() {
            assert!(decode_live(&bin[..n]).is_err());
        }
        assert!(decode_live(b"{}").is_err());
    }

    #[test]
    fn a_record_reads_back_as_written_in_either_form() {
        let r = record();
        let bin = encode_record(&r).unwrap();
        same(&decode_record(&bin).unwrap(), &r);
        // Answered tasks take their own format byte; a record without keeps the first one.
        assert_eq!(bin[0], RECORD_ANSWERS);
        let mut plain = record();
        plain.answers.clear();
        let plain_bin = encode_record(&plain).unwrap();
        assert_eq!(plain_bin[0], BINARY);
        same(&decode_record(&plain_bin).unwrap(), &plain);
        // The ARN is derived from the machine's and not written.
        assert!(!bin.windows(9).any(|w| w == b"execution"));
        // An ARN of another shape (a Map Run's child) is kept as it is.
        let mut child = record();
        child.arn = "arn:aws:states:us-east-1:000000000000:execution:Orders/run:child-1".into();
        same(
            &decode_record(&encode_record(&child).unwrap()).unwrap(),
            &child,
        );
        // What an earlier version wrote.
        let legacy = serde_json::to_vec(&r).unwrap();
        same(&decode_record(&legacy).unwrap(), &r);
        assert!(
            bin.len() * 2 < legacy.len(),
            "{} vs {}",
            bin.len(),
            legacy.len()
        );
    }

    #[test]
    fn events_keep_their_details_in_order_and_numbers_in_their_form() {
        let details = |v: Value| match v {
            Value::Object(m) => Some(m),
            _ => None,
        };
        let events = vec![
            HistoryEvent {
                id: 1,
                previous_event_id: 0,
                timestamp_ms: 1_796_160_758_449,
                event_type: EventType::ExecutionStarted,
                details: details(
                    json!({"input": "{\"n\":7}", "inputDetails": {"truncated": false},
                    "roleArn": "arn:aws:iam::000000000000:role/bench"}),
                ),
            },
            HistoryEvent {
                id: 2,
                previous_event_id: 0,
                timestamp_ms: 1_796_160_758_440,
                event_type: EventType::PassStateEntered,
                details: details(json!({"zeta": 1.0, "alpha": [null, true, -3, 1e300, "x"],
                    "name": "P1", "nested": {"deep": {"k": 12345678901234567890u64}}})),
            },
            HistoryEvent {
                id: 9,
                previous_event_id: 4,
                timestamp_ms: 0,
                event_type: *EventType::ALL.last().unwrap(),
                details: None,
            },
        ];
        let bin = encode_events(&events);
        let back = decode_events(&bin).unwrap();
        assert_eq!(back, events);
        let text = |e: &[HistoryEvent]| {
            e.iter()
                .map(|e| e.to_aws_json().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(text(&back), text(&events));
        // One event as an earlier version stored it.
        let legacy = serde_json::to_vec(&events[0]).unwrap();
        assert_eq!(decode_events(&legacy).unwrap(), events[..1]);
    }

    #[test]
    fn event_type_codes_never_move() {
        // The stored code of an event type is its position in `EventType::ALL`: new types go
        // at the end of the list in `trellis_asl::history`, or stored histories change type.
        let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names[0], "ActivityFailed");
        assert_eq!(names[10], "ExecutionStarted");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in names[..PINNED_TYPES].join(",").bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        assert_eq!(h, PINNED_HASH, "event types were reordered");
    }

    const PINNED_TYPES: usize = 64;
    const PINNED_HASH: u64 = 0xe58e_2568_d3cb_af7e;

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let bin = encode_record(&record()).unwrap();
        for cut in 1..bin.len() {
            assert!(decode_record(&bin[..cut]).is_err(), "cut at {cut}");
        }
        let mut ev = encode_events(&[HistoryEvent {
            id: 1,
            previous_event_id: 0,
            timestamp_ms: 5,
            event_type: EventType::ExecutionStarted,
            details: None,
        }]);
        ev[1] = 0xff; // a count far past the end
        assert!(decode_events(&ev).is_err());
        // Deep nesting does not overflow the stack.
        let mut deep = vec![BINARY, 1, 2, 1, 2, 10, 1, 1, 1];
        for _ in 0..10_000 {
            deep.extend([5, 1]);
        }
        assert!(decode_events(&deep).is_err());
    }

    #[test]
    fn a_listing_item_reads_back_in_either_form() {
        let mut r = record();
        let item = crate::listing::ListItem::of(&r);
        assert_eq!(decode_item(&encode_item(&item)).unwrap(), item);
        r.arn = "arn:other".into();
        r.stop_ms = None;
        r.parent = Some(crate::outbox::ParentLink {
            arn: "p".into(),
            child_id: 1,
            map_run_arn: "arn:run".into(),
            inline: false,
        });
        let item = crate::listing::ListItem::of(&r);
        assert_eq!(decode_item(&encode_item(&item)).unwrap(), item);
        let legacy = serde_json::to_vec(&item).unwrap();
        assert_eq!(decode_item(&legacy).unwrap(), item);
        assert!(decode_item(&[BINARY, 0]).is_err());
    }

    #[test]
    fn entries_read_back_op_by_op() {
        let ops = vec![
            ShardOp::Put {
                record: Box::new(record()),
                events: Vec::new(),
                definition: Some((42, "{\"StartAt\":\"A\"}".into())),
            },
            ShardOp::Expire {
                executions: vec![Expiry {
                    key: crate::record::keys::Closed::Default { stop_ms: 9, id: 7 },
                    arn: "arn:e".into(),
                }],
            },
        ];
        let bin = encode_ops(&ops).unwrap();
        assert_eq!(
            op_len(&ops[0]).unwrap() + op_len(&ops[1]).unwrap() + 2,
            bin.len()
        );
        let back = decode_ops(&bin).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&ops).unwrap()
        );
    }
}
