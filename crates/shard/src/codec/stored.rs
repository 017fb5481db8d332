//! The layouts of what a shard stores and replicates (records, listing items, history
//! batches, Raft entries), on the primitives of [`super`].

use std::collections::BTreeMap;

use trellis_asl::{EventType, HistoryEvent};

use super::{corrupt, BINARY, R, W};
use crate::record::{ExecRecord, Status};
use crate::request::{Expiry, ShardOp};
use crate::Result;

// ---------------------------------------------------------------------------------- records

/// The ARN an execution of `machine` named `name` has, when it is the usual one.
pub(super) fn derived_arn(machine: &str, name: &str) -> Option<String> {
    let (head, tail) = machine.split_once(":stateMachine:")?;
    Some(format!("{head}:execution:{tail}:{name}"))
}

/// The format byte of a record that remembers answered tasks: [`BINARY`]'s layout, then
/// the answers. A record with none keeps [`BINARY`].
pub const RECORD_ANSWERS: u8 = 0x02;

pub(super) const F_ARN_DERIVED: u8 = 1;
const F_EXPRESS: u8 = 2;
const F_CAPPED: u8 = 4;
const F_PAUSED: u8 = 8;

/// A status as one byte (records, listing items and listing keys).
pub(crate) fn status_code(s: Status) -> u8 {
    match s {
        Status::Queued => 0,
        Status::Running => 1,
        Status::Succeeded => 2,
        Status::Failed => 3,
        Status::TimedOut => 4,
        Status::Aborted => 5,
    }
}

fn status_of(code: u8) -> Result<Status> {
    Ok(match code {
        0 => Status::Queued,
        1 => Status::Running,
        2 => Status::Succeeded,
        3 => Status::Failed,
        4 => Status::TimedOut,
        5 => Status::Aborted,
        _ => return Err(corrupt("a status")),
    })
}

/// An execution record in the compact form.
pub fn encode_record(r: &ExecRecord) -> Result<Vec<u8>> {
    let mut w = W::default();
    w.u8(if r.answers.is_empty() {
        BINARY
    } else {
        RECORD_ANSWERS
    });
    w.varint(r.id);
    let derived = derived_arn(&r.state_machine_arn, &r.name).as_deref() == Some(r.arn.as_str());
    let mut flags = 0;
    for (on, f) in [
        (derived, F_ARN_DERIVED),
        (r.express, F_EXPRESS),
        (r.capped, F_CAPPED),
        (r.paused, F_PAUSED),
    ] {
        if on {
            flags |= f;
        }
    }
    w.u8(flags);
    if !derived {
        w.str(&r.arn);
    }
    w.str(&r.name);
    w.str(&r.state_machine_arn);
    w.opt(r.version_arn.as_deref(), W::str);
    w.opt(r.alias_arn.as_deref(), W::str);
    w.fixed(r.definition);
    w.str(&r.input);
    w.u8(status_code(r.status));
    w.zigzag(r.start_ms);
    w.opt(r.stop_ms, |w, s| w.zigzag(s.saturating_sub(r.start_ms)));
    w.opt(r.output.as_deref(), W::str);
    w.opt(r.error.as_deref(), W::str);
    w.opt(r.cause.as_deref(), W::str);
    w.varint(u64::from(r.redrive_count));
    w.opt(r.redrive_ms, W::zigzag);
    w.varint(r.last_event_id);
    w.varint(r.timers.len() as u64);
    for (id, due) in &r.timers {
        w.varint(*id);
        w.zigzag(*due);
    }
    w.json(&r.tasks, r.tasks.is_empty())?;
    w.opt(r.state.as_deref(), |w, s| w.str(s.get()));
    w.json(&r.outbox, r.outbox.is_empty())?;
    w.varint(r.next_seq);
    w.json(&r.parent, r.parent.is_none())?;
    w.json(&r.map_runs, r.map_runs.is_empty())?;
    w.opt(r.retention_ms, W::varint);
    w.opt((r.request_id != 0).then_some(r.request_id), W::fixed);
    // Only under their own format byte: records without them keep the earlier layout.
    if !r.answers.is_empty() {
        w.varint(r.answers.len() as u64);
        for (task, request) in &r.answers {
            w.varint(*task);
            w.fixed(*request);
        }
    }
    Ok(w.0)
}

/// An execution record in either form.
pub fn decode_record(b: &[u8]) -> Result<ExecRecord> {
    let with_answers = match b.first() {
        Some(&BINARY) => false,
        Some(&RECORD_ANSWERS) => true,
        _ => return Ok(serde_json::from_slice(b)?),
    };
    let mut r = R { b: &b[1..] };
    let id = r.varint()?;
    let flags = r.u8()?;
    let (arn, name, state_machine_arn) = r.names(flags)?;
    let version_arn = r.opt(R::str)?;
    let alias_arn = r.opt(R::str)?;
    let definition = r.fixed()?;
    let input = r.str()?;
    let status = status_of(r.u8()?)?;
    let start_ms = r.zigzag()?;
    let stop_ms = r.opt(R::zigzag)?.map(|d| start_ms.saturating_add(d));
    let output = r.opt(R::str)?;
    let error = r.opt(R::str)?;
    let cause = r.opt(R::str)?;
    let redrive_count = u32::try_from(r.varint()?).map_err(|_| corrupt("redrive count"))?;
    let redrive_ms = r.opt(R::zigzag)?;
    let last_event_id = r.varint()?;
    let mut timers = BTreeMap::new();
    for _ in 0..r.count()? {
        let id = r.varint()?;
        timers.insert(id, r.zigzag()?);
    }
    let tasks = r.json()?;
    let state = match r.opt(R::str)? {
        Some(s) => Some(
            serde_json::value::RawValue::from_string(s)
                .map_err(|_| corrupt("an interpreter state that is not JSON"))?,
        ),
        None => None,
    };
    let outbox = r.json()?;
    let next_seq = r.varint()?;
    let parent = r.json()?;
    let map_runs = r.json()?;
    let retention_ms = r.opt(R::varint)?;
    let request_id = r.opt(R::fixed)?.unwrap_or(0);
    let mut answers = Vec::new();
    if with_answers {
        for _ in 0..r.count()? {
            answers.push((r.varint()?, r.fixed()?));
        }
    }
    r.end()?;
    Ok(ExecRecord {
        id,
        arn,
        name,
        state_machine_arn,
        version_arn,
        alias_arn,
        definition,
        express: flags & F_EXPRESS != 0,
        capped: flags & F_CAPPED != 0,
        input,
        status,
        start_ms,
        stop_ms,
        output,
        error,
        cause,
        paused: flags & F_PAUSED != 0,
        redrive_count,
        redrive_ms,
        last_event_id,
        timers,
        tasks,
        state,
        outbox,
        next_seq,
        parent,
        map_runs,
        retention_ms,
        request_id,
        answers,
    })
}

/// A listing entry ([`crate::listing::ListItem`]) in the compact form:
/// `0x01 flags [str(arn)] str(name) str(machine) u8(status) zigzag(start)
/// opt(zigzag(stop-start)) varint(redrive_count) str(map_run_arn)`.
pub fn encode_item(i: &crate::listing::ListItem) -> Vec<u8> {
    let mut w = W::default();
    w.u8(BINARY);
    let derived = derived_arn(&i.state_machine_arn, &i.name).as_deref() == Some(i.arn.as_str());
    w.u8(if derived { F_ARN_DERIVED } else { 0 });
    if !derived {
        w.str(&i.arn);
    }
    w.str(&i.name);
    w.str(&i.state_machine_arn);
    w.u8(status_code(i.status));
    w.zigzag(i.start_ms);
    w.opt(i.stop_ms, |w, s| w.zigzag(s.saturating_sub(i.start_ms)));
    w.varint(u64::from(i.redrive_count));
    w.str(&i.map_run_arn);
    w.0
}

/// A listing entry in either form.
pub fn decode_item(b: &[u8]) -> Result<crate::listing::ListItem> {
    match b.first() {
        Some(&BINARY) => {}
        _ => return Ok(serde_json::from_slice(b)?),
    }
    let mut r = R { b: &b[1..] };
    let flags = r.u8()?;
    let (arn, name, state_machine_arn) = r.names(flags)?;
    let status = status_of(r.u8()?)?;
    let start_ms = r.zigzag()?;
    let stop_ms = r.opt(R::zigzag)?.map(|d| start_ms.saturating_add(d));
    let redrive_count = u32::try_from(r.varint()?).map_err(|_| corrupt("redrive count"))?;
    let map_run_arn = r.str()?;
    r.end()?;
    Ok(crate::listing::ListItem {
        arn,
        state_machine_arn,
        name,
        status,
        start_ms,
        stop_ms,
        redrive_count,
        map_run_arn,
    })
}

// ---------------------------------------------------------------------------------- events

fn type_code(t: EventType) -> u64 {
    EventType::ALL.iter().position(|x| *x == t).unwrap_or(0) as u64
}

fn write_events(w: &mut W, events: &[HistoryEvent]) {
    w.varint(events.len() as u64);
    let (mut id, mut at) = (0u64, 0i64);
    for e in events {
        w.zigzag((e.id as i64).wrapping_sub(id as i64));
        w.varint(e.id.wrapping_sub(e.previous_event_id));
        w.zigzag(e.timestamp_ms.wrapping_sub(at));
        w.varint(type_code(e.event_type));
        w.opt(e.details.as_ref(), W::object);
        (id, at) = (e.id, e.timestamp_ms);
    }
}

fn read_events(r: &mut R<'_>) -> Result<Vec<HistoryEvent>> {
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    let (mut id, mut at) = (0u64, 0i64);
    for _ in 0..n {
        id = (id as i64).wrapping_add(r.zigzag()?) as u64;
        let previous_event_id = id.wrapping_sub(r.varint()?);
        at = at.wrapping_add(r.zigzag()?);
        let code = usize::try_from(r.varint()?).unwrap_or(usize::MAX);
        let event_type = *EventType::ALL
            .get(code)
            .ok_or_else(|| corrupt("an event type"))?;
        let details = r.opt(|r| r.object(1))?;
        out.push(HistoryEvent {
            id,
            previous_event_id,
            timestamp_ms: at,
            event_type,
            details,
        });
    }
    Ok(out)
}

/// History events written together, in the compact form: one stored value.
pub fn encode_events(events: &[HistoryEvent]) -> Vec<u8> {
    let mut w = W::default();
    w.u8(BINARY);
    write_events(&mut w, events);
    w.0
}

/// A stored history value: a batch in the compact form, or one event as JSON (earlier
/// versions stored each event alone).
pub fn decode_events(b: &[u8]) -> Result<Vec<HistoryEvent>> {
    match b.first() {
        Some(&BINARY) => {
            let mut r = R { b: &b[1..] };
            let events = read_events(&mut r)?;
            r.end()?;
            Ok(events)
        }
        _ => Ok(vec![serde_json::from_slice(b)?]),
    }
}

// ------------------------------------------------------------------------------- live index

/// An entry of the `live` index: what a new leader loads of a live execution
/// ([`crate::app::ShardApp::for_each_live`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEntry {
    pub arn: String,
    /// Its timers (timer id, due), when it waits on them only
    /// ([`ExecRecord::parkable`]): it is parked without reading its record.
    pub waiting: Option<Box<[(u64, i64)]>>,
}

/// `0x01 str(arn) opt(varint(n) (varint(timer) zigzag(due))*n)`.
pub fn encode_live(r: &ExecRecord) -> Vec<u8> {
    let mut w = W::default();
    w.u8(BINARY);
    w.str(&r.arn);
    w.opt(r.parkable().then_some(&r.timers), |w, timers| {
        w.varint(timers.len() as u64);
        for (timer, due) in timers {
            w.varint(*timer);
            w.zigzag(*due);
        }
    });
    w.0
}

pub fn decode_live(b: &[u8]) -> Result<LiveEntry> {
    let mut r = R { b };
    if r.u8()? != BINARY {
        return Err(corrupt("a live index entry's format byte"));
    }
    let arn = r.str()?;
    let waiting = r.opt(|r| {
        let n = r.count()?;
        let mut timers = Vec::with_capacity(n);
        for _ in 0..n {
            timers.push((r.varint()?, r.zigzag()?));
        }
        Ok(timers.into_boxed_slice())
    })?;
    r.end()?;
    Ok(LiveEntry { arn, waiting })
}

// ---------------------------------------------------------------------------------- entries

const OP_PUT: u8 = 0;
const OP_EXPIRE: u8 = 1;

fn write_op(w: &mut W, op: &ShardOp) -> Result<()> {
    match op {
        ShardOp::Put {
            record,
            events,
            definition,
        } => {
            w.u8(OP_PUT);
            w.bytes(&encode_record(record)?);
            write_events(w, events);
            w.opt(definition.as_ref(), |w, (hash, text)| {
                w.fixed(*hash);
                w.str(text);
            });
        }
        ShardOp::Expire { executions } => {
            w.u8(OP_EXPIRE);
            w.varint(executions.len() as u64);
            for e in executions {
                w.0.extend_from_slice(&e.key.to_bytes());
                w.str(&e.arn);
            }
        }
    }
    Ok(())
}

fn read_op(r: &mut R<'_>) -> Result<ShardOp> {
    Ok(match r.u8()? {
        OP_PUT => {
            let record = Box::new(decode_record(r.bytes()?)?);
            let events = read_events(r)?;
            let definition = r.opt(|r| Ok((r.fixed()?, r.str()?)))?;
            ShardOp::Put {
                record,
                events,
                definition,
            }
        }
        OP_EXPIRE => {
            let n = r.count()?;
            let mut executions = Vec::with_capacity(n);
            for _ in 0..n {
                let key = crate::record::keys::Closed::from_bytes(r.take(17)?)
                    .ok_or_else(|| corrupt("a closed index key"))?;
                executions.push(Expiry { key, arn: r.str()? });
            }
            ShardOp::Expire { executions }
        }
        _ => return Err(corrupt("an op tag")),
    })
}

/// One op's size in the compact form.
pub fn op_len(op: &ShardOp) -> Result<usize> {
    let mut w = W::default();
    write_op(&mut w, op)?;
    Ok(w.0.len())
}

/// A Raft entry's ops in the compact form.
pub fn encode_ops(ops: &[ShardOp]) -> Result<Vec<u8>> {
    let mut w = W::default();
    w.u8(BINARY);
    w.varint(ops.len() as u64);
    for op in ops {
        write_op(&mut w, op)?;
    }
    Ok(w.0)
}

pub fn decode_ops(b: &[u8]) -> Result<Vec<ShardOp>> {
    let mut r = R { b };
    if r.u8()? != BINARY {
        return Err(corrupt("an entry's format byte"));
    }
    let n = r.count()?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        ops.push(read_op(&mut r)?);
    }
    r.end()?;
    Ok(ops)
}
