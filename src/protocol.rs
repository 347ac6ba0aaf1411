//! The messages host and worker exchange, inside frames.
//!
//! A frame body starts with a one-byte message kind followed by varint
//! fields; a payload (a task or its output, postcard-encoded) runs to the end
//! of the frame, so it is written straight into the frame buffer and never
//! copied into an intermediate vector.
//!
//! Before its first frame the worker writes [`MAGIC`], so the host can tell a
//! worker from a program that printed to stdout before `procpool::init()`.

use crate::frame::{put_varint, take_varint};

/// Version of the wire protocol; host and worker must agree.
pub(crate) const VERSION: u32 = 3;

/// Written by a worker before its first frame.
pub(crate) const MAGIC: &[u8; 8] = b"\0PRCPOOL";
/// Written instead of [`MAGIC`] by a process that was started as a worker but
/// reached pool construction without calling `procpool::init()`.
pub(crate) const MISSING_INIT_MAGIC: &[u8; 8] = b"\0PRCNOIN";

const JOB: u8 = 1;
const CANCEL: u8 = 2;
const BATCH: u8 = 3;
const JOB_AHEAD: u8 = 4;
const BATCH_AHEAD: u8 = 5;
const REVOKE: u8 = 6;
const CREDIT: u8 = 7;
const HELLO: u8 = 0x10;
const DONE: u8 = 0x11;
const PANICKED: u8 = 0x12;
const FAILED: u8 = 0x13;
const STARTED: u8 = 0x14;
const REVOKED: u8 = 0x15;
const PROGRESS: u8 = 0x16;
const ITEM: u8 = 0x17;
const CANCELLED: u8 = 0x18;
/// A panic frame from a worker that ends with the panic (`panic = "abort"`).
const PANICKED_ENDING: u8 = 0x19;

/// Where in the worker a job failed without panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailStage {
    /// The task bytes did not decode into the task type.
    DecodeTask,
    /// The task's output did not encode.
    EncodeOutput,
    /// The worker has no task at the index the host sent.
    UnknownTask,
}

impl FailStage {
    fn to_byte(self) -> u8 {
        match self {
            FailStage::DecodeTask => 1,
            FailStage::EncodeOutput => 2,
            FailStage::UnknownTask => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => FailStage::DecodeTask,
            2 => FailStage::EncodeOutput,
            3 => FailStage::UnknownTask,
            _ => return None,
        })
    }
}

/// A message from the host to a worker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToWorker<'a> {
    /// Run the task registered at index `task` on `payload`. `ahead`: the
    /// host sent it while another job was in flight, so the worker must
    /// report when it starts it.
    Job {
        id: u64,
        task: u32,
        payload: &'a [u8],
        ahead: bool,
    },
    /// Cancel job `id`: drop it if it has not started, else flag it.
    Cancel { id: u64 },
    /// Give job `id` back if it has not started (another worker is idle).
    Revoke { id: u64 },
    /// The host consumed `n` more items of streaming job `id`.
    Credit { id: u64, n: u64 },
    /// Run the task at index `task` on each of `count` length-prefixed
    /// payloads in `items`, in order.
    Batch {
        id: u64,
        task: u32,
        count: u64,
        items: &'a [u8],
        ahead: bool,
    },
}

impl ToWorker<'_> {
    /// The id of the job this message is about.
    pub(crate) fn id(&self) -> u64 {
        match self {
            ToWorker::Job { id, .. }
            | ToWorker::Batch { id, .. }
            | ToWorker::Cancel { id }
            | ToWorker::Revoke { id }
            | ToWorker::Credit { id, .. } => *id,
        }
    }

    pub(crate) fn is_ahead(&self) -> bool {
        matches!(
            self,
            ToWorker::Job { ahead: true, .. } | ToWorker::Batch { ahead: true, .. }
        )
    }
}

/// Turns a finished job or batch frame into its "sent ahead" form.
pub(crate) fn mark_ahead(frame: &mut [u8]) {
    if let Some(kind) = frame.get_mut(crate::frame::PREFIX) {
        *kind = match *kind {
            JOB => JOB_AHEAD,
            BATCH => BATCH_AHEAD,
            other => other,
        };
    }
}

/// Splits the `items` of a batch into payloads.
pub(crate) struct BatchItems<'a> {
    rest: &'a [u8],
}

impl<'a> BatchItems<'a> {
    pub(crate) fn new(items: &'a [u8]) -> Self {
        BatchItems { rest: items }
    }
}

impl<'a> Iterator for BatchItems<'a> {
    type Item = Result<&'a [u8], String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = take_varint(&mut self.rest)
            .and_then(|len| usize::try_from(len).ok())
            .and_then(|len| {
                let (item, rest) = self.rest.split_at_checked(len)?;
                self.rest = rest;
                Some(item)
            });
        match item {
            Some(item) => Some(Ok(item)),
            None => {
                self.rest = &[];
                Some(Err("a batch item with a bad length".into()))
            }
        }
    }
}

/// How one item of a batch ended, in a batch result.
pub(crate) const ITEM_OK: u8 = 0;
pub(crate) const ITEM_PANICKED: u8 = 1;
pub(crate) const ITEM_FAILED: u8 = 2;

/// Appends one batch item result: a tag, for failures the stage, then a
/// length-prefixed body (the encoded output or the message). A panicked
/// item is appended with [`put_item_panicked`] instead.
pub(crate) fn put_item_result(buf: &mut Vec<u8>, tag: u8, stage: Option<FailStage>, body: &[u8]) {
    buf.push(tag);
    if let Some(stage) = stage {
        buf.push(stage.to_byte());
    }
    put_varint(buf, body.len() as u64);
    buf.extend_from_slice(body);
}

/// Appends the result of a batch item that panicked: the tag, the panic's
/// location (see [`put_location`]), then the length-prefixed message.
pub(crate) fn put_item_panicked(buf: &mut Vec<u8>, message: &str, location: Option<&str>) {
    buf.push(ITEM_PANICKED);
    put_location(buf, location);
    put_varint(buf, message.len() as u64);
    buf.extend_from_slice(message.as_bytes());
}

/// Appends a panic's location: a varint of its length plus one (zero when
/// unknown), then its bytes.
fn put_location(buf: &mut Vec<u8>, location: Option<&str>) {
    match location {
        None => put_varint(buf, 0),
        Some(at) => {
            put_varint(buf, at.len() as u64 + 1);
            buf.extend_from_slice(at.as_bytes());
        }
    }
}

/// Reads a location written by [`put_location`]; `None` if malformed (a
/// bad length, or not UTF-8), `Some(None)` if it was unknown.
fn take_location(bytes: &mut &[u8]) -> Option<Option<String>> {
    let len = take_varint(bytes)?;
    let Some(len) = len.checked_sub(1) else {
        return Some(None);
    };
    let (at, rest) = bytes.split_at_checked(usize::try_from(len).ok()?)?;
    *bytes = rest;
    Some(Some(std::str::from_utf8(at).ok()?.to_owned()))
}

/// One item of a batch result, as decoded by the host.
pub(crate) enum ItemResult<'a> {
    Ok(&'a [u8]),
    Panicked {
        message: String,
        location: Option<String>,
    },
    Failed(FailStage, String),
}

/// Reads the next item result from the front of `bytes`.
pub(crate) fn take_item_result<'a>(bytes: &mut &'a [u8]) -> Option<ItemResult<'a>> {
    let (&tag, mut rest) = bytes.split_first()?;
    let stage = if tag == ITEM_FAILED {
        let (&stage, r) = rest.split_first()?;
        rest = r;
        Some(FailStage::from_byte(stage)?)
    } else {
        None
    };
    let location = if tag == ITEM_PANICKED {
        take_location(&mut rest)?
    } else {
        None
    };
    let len = usize::try_from(take_varint(&mut rest)?).ok()?;
    let (body, rest) = rest.split_at_checked(len)?;
    *bytes = rest;
    match (tag, stage) {
        (ITEM_OK, _) => Some(ItemResult::Ok(body)),
        (ITEM_PANICKED, _) => Some(ItemResult::Panicked {
            message: String::from_utf8_lossy(body).into_owned(),
            location,
        }),
        (ITEM_FAILED, Some(stage)) => Some(ItemResult::Failed(
            stage,
            String::from_utf8_lossy(body).into_owned(),
        )),
        _ => None,
    }
}

/// A message from a worker to the host.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromWorker {
    /// The first frame: who the worker is and what it was built from.
    Hello {
        version: u32,
        build_id: u64,
        pid: u32,
    },
    /// The job finished; its encoded output is `body[offset..]`.
    Done {
        id: u64,
        body: Vec<u8>,
        offset: usize,
    },
    /// The job panicked (at `location`, if known). `ending`: the worker
    /// process ends with this panic (it was built with `panic = "abort"`),
    /// so no job may be sent to it any more.
    Panicked {
        id: u64,
        message: String,
        location: Option<String>,
        ending: bool,
    },
    /// The job failed in the worker's glue code.
    Failed {
        id: u64,
        stage: FailStage,
        message: String,
    },
    /// The running streaming job emitted an item: `body[offset..]`.
    Item {
        id: u64,
        body: Vec<u8>,
        offset: usize,
    },
    /// The running job reported progress.
    Progress {
        id: u64,
        done: u64,
        total: Option<u64>,
        message: Option<String>,
    },
    /// A job sent ahead has started.
    Started { id: u64 },
    /// A job sent ahead was given back without running (revoked, or
    /// cancelled before it started).
    Revoked { id: u64 },
    /// A running async job was dropped because the host cancelled it.
    Cancelled { id: u64 },
}

/// Writes the fields of a job frame; the caller appends the payload and
/// finishes the frame.
pub(crate) fn put_job_header(buf: &mut Vec<u8>, id: u64, task: u32) {
    buf.push(JOB);
    put_varint(buf, id);
    put_varint(buf, u64::from(task));
}

/// Writes the fields of a batch frame; the caller appends the items, each
/// as a varint length and the payload.
pub(crate) fn put_batch_header(buf: &mut Vec<u8>, id: u64, task: u32, count: u64) {
    buf.push(BATCH);
    put_varint(buf, id);
    put_varint(buf, u64::from(task));
    put_varint(buf, count);
}

pub(crate) fn put_cancel(buf: &mut Vec<u8>, id: u64) {
    buf.push(CANCEL);
    put_varint(buf, id);
}

pub(crate) fn put_credit(buf: &mut Vec<u8>, id: u64, n: u64) {
    buf.push(CREDIT);
    put_varint(buf, id);
    put_varint(buf, n);
}

/// Writes the fields of an item frame; the caller appends the item.
pub(crate) fn put_item_header(buf: &mut Vec<u8>, id: u64) {
    buf.push(ITEM);
    put_varint(buf, id);
}

pub(crate) fn put_revoke(buf: &mut Vec<u8>, id: u64) {
    buf.push(REVOKE);
    put_varint(buf, id);
}

pub(crate) fn put_started(buf: &mut Vec<u8>, id: u64) {
    buf.push(STARTED);
    put_varint(buf, id);
}

pub(crate) fn put_progress(
    buf: &mut Vec<u8>,
    id: u64,
    done: u64,
    total: Option<u64>,
    message: Option<&str>,
) {
    buf.push(PROGRESS);
    put_varint(buf, id);
    put_varint(buf, done);
    put_varint(buf, total.map_or(0, |t| t.saturating_add(1)));
    if let Some(m) = message {
        buf.push(1);
        buf.extend_from_slice(m.as_bytes());
    }
}

pub(crate) fn put_cancelled(buf: &mut Vec<u8>, id: u64) {
    buf.push(CANCELLED);
    put_varint(buf, id);
}

pub(crate) fn put_revoked(buf: &mut Vec<u8>, id: u64) {
    buf.push(REVOKED);
    put_varint(buf, id);
}

pub(crate) fn put_hello(buf: &mut Vec<u8>, build_id: u64, pid: u32) {
    buf.push(HELLO);
    put_varint(buf, u64::from(VERSION));
    buf.extend_from_slice(&build_id.to_le_bytes());
    put_varint(buf, u64::from(pid));
}

/// Writes the fields of a done frame; the caller appends the output.
pub(crate) fn put_done_header(buf: &mut Vec<u8>, id: u64) {
    buf.push(DONE);
    put_varint(buf, id);
}

/// Writes a panic frame: the id, the location (see [`put_location`]),
/// then the message to the end of the frame. `ending`: the worker ends
/// with this panic.
pub(crate) fn put_panicked(
    buf: &mut Vec<u8>,
    id: u64,
    message: &str,
    location: Option<&str>,
    ending: bool,
) {
    buf.push(if ending { PANICKED_ENDING } else { PANICKED });
    put_varint(buf, id);
    put_location(buf, location);
    buf.extend_from_slice(message.as_bytes());
}

pub(crate) fn put_failed(buf: &mut Vec<u8>, id: u64, stage: FailStage, message: &str) {
    buf.push(FAILED);
    put_varint(buf, id);
    buf.push(stage.to_byte());
    buf.extend_from_slice(message.as_bytes());
}

/// Decodes a frame body sent by the host.
pub(crate) fn decode_to_worker(body: &[u8]) -> Result<ToWorker<'_>, String> {
    let (&kind, mut rest) = body.split_first().ok_or("an empty frame")?;
    match kind {
        JOB | JOB_AHEAD => {
            let id = take_varint(&mut rest).ok_or("a job frame with a bad id")?;
            let task = take_varint(&mut rest)
                .and_then(|t| u32::try_from(t).ok())
                .ok_or("a job frame with a bad task index")?;
            Ok(ToWorker::Job {
                id,
                task,
                payload: rest,
                ahead: kind == JOB_AHEAD,
            })
        }
        BATCH | BATCH_AHEAD => {
            let id = take_varint(&mut rest).ok_or("a batch frame with a bad id")?;
            let task = take_varint(&mut rest)
                .and_then(|t| u32::try_from(t).ok())
                .ok_or("a batch frame with a bad task index")?;
            let count = take_varint(&mut rest).ok_or("a batch frame with a bad count")?;
            Ok(ToWorker::Batch {
                id,
                task,
                count,
                items: rest,
                ahead: kind == BATCH_AHEAD,
            })
        }
        CREDIT => {
            let id = take_varint(&mut rest).ok_or("a credit frame with a bad id")?;
            let n = take_varint(&mut rest).ok_or("a credit frame with a bad count")?;
            if !rest.is_empty() {
                return Err("a credit frame with trailing bytes".into());
            }
            Ok(ToWorker::Credit { id, n })
        }
        CANCEL | REVOKE => {
            let id = take_varint(&mut rest).ok_or("a cancel frame with a bad id")?;
            if !rest.is_empty() {
                return Err("a cancel frame with trailing bytes".into());
            }
            Ok(if kind == CANCEL {
                ToWorker::Cancel { id }
            } else {
                ToWorker::Revoke { id }
            })
        }
        other => Err(format!("a frame of unknown kind {other} from the host")),
    }
}

/// Decodes a frame body sent by a worker.
pub(crate) fn decode_from_worker(body: Vec<u8>) -> Result<FromWorker, String> {
    let (&kind, mut rest) = body.split_first().ok_or("an empty frame")?;
    let bad = |what: &str| format!("a malformed {what} frame from the worker");
    match kind {
        HELLO => {
            let version = take_varint(&mut rest)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad("hello"))?;
            let (id_bytes, mut rest) = rest.split_at_checked(8).ok_or_else(|| bad("hello"))?;
            let mut b = [0u8; 8];
            b.copy_from_slice(id_bytes);
            let pid = take_varint(&mut rest)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad("hello"))?;
            if !rest.is_empty() {
                return Err(bad("hello"));
            }
            Ok(FromWorker::Hello {
                version,
                build_id: u64::from_le_bytes(b),
                pid,
            })
        }
        DONE => {
            let id = take_varint(&mut rest).ok_or_else(|| bad("result"))?;
            let offset = body.len() - rest.len();
            Ok(FromWorker::Done { id, body, offset })
        }
        PANICKED | PANICKED_ENDING => {
            let id = take_varint(&mut rest).ok_or_else(|| bad("panic"))?;
            let location = take_location(&mut rest).ok_or_else(|| bad("panic"))?;
            Ok(FromWorker::Panicked {
                id,
                message: String::from_utf8_lossy(rest).into_owned(),
                location,
                ending: kind == PANICKED_ENDING,
            })
        }
        FAILED => {
            let id = take_varint(&mut rest).ok_or_else(|| bad("failure"))?;
            let (&stage, rest) = rest.split_first().ok_or_else(|| bad("failure"))?;
            let stage = FailStage::from_byte(stage).ok_or_else(|| bad("failure"))?;
            Ok(FromWorker::Failed {
                id,
                stage,
                message: String::from_utf8_lossy(rest).into_owned(),
            })
        }
        ITEM => {
            let id = take_varint(&mut rest).ok_or_else(|| bad("item"))?;
            let offset = body.len() - rest.len();
            Ok(FromWorker::Item { id, body, offset })
        }
        PROGRESS => {
            let id = take_varint(&mut rest).ok_or_else(|| bad("progress"))?;
            let done = take_varint(&mut rest).ok_or_else(|| bad("progress"))?;
            let total = take_varint(&mut rest).ok_or_else(|| bad("progress"))?;
            let message = match rest.split_first() {
                None => None,
                Some((1, m)) => Some(String::from_utf8_lossy(m).into_owned()),
                Some(_) => return Err(bad("progress")),
            };
            Ok(FromWorker::Progress {
                id,
                done,
                total: total.checked_sub(1),
                message,
            })
        }
        STARTED | REVOKED | CANCELLED => {
            let id = take_varint(&mut rest).ok_or_else(|| bad("status"))?;
            if !rest.is_empty() {
                return Err(bad("status"));
            }
            Ok(match kind {
                STARTED => FromWorker::Started { id },
                REVOKED => FromWorker::Revoked { id },
                _ => FromWorker::Cancelled { id },
            })
        }
        other => Err(format!("a frame of unknown kind {other} from the worker")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut b = Vec::new();
        put_job_header(&mut b, 42, 7);
        b.extend_from_slice(b"payload");
        assert_eq!(
            decode_to_worker(&b).unwrap(),
            ToWorker::Job {
                id: 42,
                task: 7,
                payload: b"payload",
                ahead: false,
            }
        );
        b.clear();
        put_cancel(&mut b, u64::MAX);
        assert_eq!(
            decode_to_worker(&b).unwrap(),
            ToWorker::Cancel { id: u64::MAX }
        );
        b.clear();
        put_hello(&mut b, 0xdead_beef, 1234);
        assert_eq!(
            decode_from_worker(b.clone()).unwrap(),
            FromWorker::Hello {
                version: VERSION,
                build_id: 0xdead_beef,
                pid: 1234
            }
        );
        b.clear();
        put_failed(&mut b, 3, FailStage::EncodeOutput, "nope");
        assert_eq!(
            decode_from_worker(b.clone()).unwrap(),
            FromWorker::Failed {
                id: 3,
                stage: FailStage::EncodeOutput,
                message: "nope".into()
            }
        );
    }

    #[test]
    fn panics_round_trip_with_and_without_a_location() {
        let mut b = Vec::new();
        put_panicked(&mut b, 9, "boom: 42", Some("src/jobs.rs:12:5"), false);
        assert_eq!(
            decode_from_worker(b.clone()).unwrap(),
            FromWorker::Panicked {
                id: 9,
                message: "boom: 42".into(),
                location: Some("src/jobs.rs:12:5".into()),
                ending: false,
            }
        );
        b.clear();
        put_panicked(&mut b, 9, "", None, true);
        assert_eq!(
            decode_from_worker(b.clone()).unwrap(),
            FromWorker::Panicked {
                id: 9,
                message: String::new(),
                location: None,
                ending: true,
            }
        );

        let mut items = Vec::new();
        put_item_panicked(&mut items, "item boom", Some("src/a.rs:1:2"));
        put_item_panicked(&mut items, "no place", None);
        put_item_result(&mut items, ITEM_OK, None, b"out");
        let mut rest = &items[..];
        match take_item_result(&mut rest) {
            Some(ItemResult::Panicked { message, location }) => {
                assert_eq!(message, "item boom");
                assert_eq!(location.as_deref(), Some("src/a.rs:1:2"));
            }
            _ => panic!("expected a panicked item"),
        }
        assert!(matches!(
            take_item_result(&mut rest),
            Some(ItemResult::Panicked { location: None, .. })
        ));
        assert!(matches!(
            take_item_result(&mut rest),
            Some(ItemResult::Ok(b"out"))
        ));
        assert!(rest.is_empty());
    }

    #[test]
    fn a_malformed_panic_location_is_an_error() {
        // A location longer than the frame, and one that is not UTF-8.
        assert!(decode_from_worker(vec![PANICKED, 1, 10, b'a']).is_err());
        assert!(decode_from_worker(vec![PANICKED, 1, 3, 0xff, 0xfe]).is_err());
        // No location field at all.
        assert!(decode_from_worker(vec![PANICKED, 1]).is_err());
        let mut bad_item: &[u8] = &[ITEM_PANICKED, 3, 0xff, 0xfe, 0];
        assert!(take_item_result(&mut bad_item).is_none());
    }

    #[test]
    fn wrong_direction_and_garbage_are_errors() {
        let mut b = Vec::new();
        put_job_header(&mut b, 1, 1);
        assert!(decode_from_worker(b.clone()).is_err());
        b.clear();
        put_hello(&mut b, 1, 1);
        assert!(decode_to_worker(&b).is_err());
        assert!(decode_to_worker(&[]).is_err());
        assert!(decode_from_worker(vec![]).is_err());
        assert!(decode_from_worker(vec![HELLO, 0xff]).is_err());
    }
}
