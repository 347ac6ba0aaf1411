//! Entry points for fuzzing and property-testing the decoders. Not a public
//! API: exposed (hidden) so `tests/` and `fuzz/` can drive the real code.

use crate::error::Error;
use crate::frame::{self, SyncFrameReader};
use crate::protocol::{self, FromWorker, ToWorker};

fn protocol_error(message: String) -> Error {
    Error::Protocol { message }
}

/// Splits `bytes` into frames as the host reads a worker's output, and
/// decodes each message (and each item of a batch result). Returns how
/// many messages decoded, or the first error, always `Error::Protocol`.
pub fn host_decode(bytes: &[u8], max_frame: usize) -> Result<usize, Error> {
    let mut reader = SyncFrameReader::new(bytes, max_frame);
    let mut n = 0;
    while let Some(body) = reader
        .next_frame()
        .map_err(|e| protocol_error(e.to_string()))?
    {
        if let FromWorker::Done { body, offset, .. } =
            protocol::decode_from_worker(body).map_err(protocol_error)?
        {
            let mut rest = body.get(offset..).unwrap_or_default();
            while !rest.is_empty() {
                if protocol::take_item_result(&mut rest).is_none() {
                    break;
                }
            }
        }
        n += 1;
    }
    Ok(n)
}

/// Splits `bytes` into frames as a worker reads the host's input, and
/// decodes each message (and each item of a batch). Returns how many
/// messages decoded, or the first error, always `Error::Protocol`.
pub fn worker_decode(bytes: &[u8], max_frame: usize) -> Result<usize, Error> {
    let mut reader = SyncFrameReader::new(bytes, max_frame);
    let mut n = 0;
    while let Some(body) = reader
        .next_frame()
        .map_err(|e| protocol_error(e.to_string()))?
    {
        if let ToWorker::Batch { items, .. } =
            protocol::decode_to_worker(&body).map_err(protocol_error)?
        {
            for item in protocol::BatchItems::new(items) {
                item.map_err(protocol_error)?;
            }
        }
        n += 1;
    }
    Ok(n)
}

/// A valid frame from a worker: a result for job `id` with `output` bytes.
/// Empty if the body would be 4 GiB or more (no frame can hold it).
pub fn done_frame(id: u64, output: &[u8]) -> Vec<u8> {
    frame::build(output.len() + 16, usize::MAX, |buf| {
        protocol::put_done_header(buf, id);
        buf.extend_from_slice(output);
    })
    .unwrap_or_default()
}

/// A valid frame from the host: job `id` for task index `task`. Empty if
/// the body would be 4 GiB or more (no frame can hold it).
pub fn job_frame(id: u64, task: u32, payload: &[u8]) -> Vec<u8> {
    frame::build(payload.len() + 24, usize::MAX, |buf| {
        protocol::put_job_header(buf, id, task);
        buf.extend_from_slice(payload);
    })
    .unwrap_or_default()
}
