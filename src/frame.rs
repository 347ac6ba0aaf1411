//! Length-prefixed frames: a little-endian `u32` body length, then the body.
//!
//! The length is checked against the configured maximum before anything is
//! allocated for the body, so a hostile or corrupted length prefix costs
//! nothing. Small frames are carved out of one reusable read buffer (one
//! `read` syscall can bring many of them); a large frame is read straight
//! into its own exactly-sized allocation, so big payloads are copied once.

use std::fmt;

use crate::sys;

/// Bytes in the length prefix.
pub(crate) const PREFIX: usize = 4;

/// The maximum frame size when nothing else is configured: 1 GiB, so images
/// and arrays pass. The host's default (`config` re-exports it), and the
/// worker's if the host did not pass a limit.
pub(crate) const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// Size of the reusable read buffer; frames larger than this bypass it.
const CHUNK: usize = 64 * 1024;

/// Why a byte stream could not be split into frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The length prefix announces more than the configured maximum.
    TooLarge { len: u64, max: usize },
    /// The stream ended in the middle of a frame.
    Truncated { have: usize, want: usize },
    /// The underlying read failed.
    Io(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => write!(
                f,
                "a frame announced {len} bytes, more than the maximum frame size of {max} bytes \
                 (raise it with `Builder::max_frame_size` if such payloads are expected)"
            ),
            FrameError::Truncated { have, want } => write!(
                f,
                "the stream ended in the middle of a frame ({have} of {want} bytes received)"
            ),
            FrameError::Io(e) => write!(f, "reading a frame failed: {e}"),
        }
    }
}

/// What the buffer holds next.
pub(crate) enum Next {
    /// A complete frame body.
    Frame(Vec<u8>),
    /// More bytes are needed before anything can be returned.
    NeedMore,
    /// A frame too large for the chunk buffer: the body so far is in the
    /// vector (already allocated at its full length); the caller reads
    /// the rest, from `filled` on, directly into it.
    Large { body: Vec<u8>, filled: usize },
}

/// A read buffer that splits a byte stream into frames.
pub(crate) struct FrameBuffer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    max: usize,
}

impl FrameBuffer {
    pub(crate) fn new(max: usize) -> Self {
        FrameBuffer {
            buf: vec![0; CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            max,
        }
    }

    /// Bytes received but not yet returned as part of a frame.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Discards `n` buffered bytes (used while scanning for the handshake).
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Takes the next frame out of the buffer if it is complete.
    pub(crate) fn next(&mut self) -> Result<Next, FrameError> {
        let avail = self.end - self.start;
        if avail < PREFIX {
            return Ok(Next::NeedMore);
        }
        let mut prefix = [0u8; PREFIX];
        prefix.copy_from_slice(&self.buf[self.start..self.start + PREFIX]);
        let len = u32::from_le_bytes(prefix);
        let len = usize::try_from(len).map_err(|_| FrameError::TooLarge {
            len: u64::from(len),
            max: self.max,
        })?;
        if len > self.max {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max,
            });
        }
        let body_start = self.start + PREFIX;
        if avail - PREFIX >= len {
            let body = self.buf[body_start..body_start + len].to_vec();
            self.start = body_start + len;
            return Ok(Next::Frame(body));
        }
        if PREFIX + len <= self.buf.len() {
            return Ok(Next::NeedMore);
        }
        let have = avail - PREFIX;
        // A zeroed allocation this large is normally fresh memory from the
        // kernel that nothing has written yet (malloc skips the memset), so
        // the huge-page hint applies to all of it.
        let mut body = vec![0u8; len];
        sys::advise_huge(&mut body);
        body[..have].copy_from_slice(&self.buf[body_start..self.end]);
        self.start = 0;
        self.end = 0;
        Ok(Next::Large { body, filled: have })
    }

    /// Free space to read into, after moving buffered bytes to the front.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`FrameBuffer::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The error for an end of stream in the current state.
    pub(crate) fn eof(&self) -> Result<Option<Vec<u8>>, FrameError> {
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(None);
        }
        let want = if avail >= PREFIX {
            let mut prefix = [0u8; PREFIX];
            prefix.copy_from_slice(&self.buf[self.start..self.start + PREFIX]);
            PREFIX + u32::from_le_bytes(prefix) as usize
        } else {
            PREFIX
        };
        Err(FrameError::Truncated { have: avail, want })
    }
}

/// Reads frames from a blocking reader (the worker side).
pub(crate) struct SyncFrameReader<R> {
    inner: R,
    buf: FrameBuffer,
}

impl<R: std::io::Read> SyncFrameReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        SyncFrameReader {
            inner,
            buf: FrameBuffer::new(max),
        }
    }

    /// The next frame body; `Ok(None)` on a clean end of stream.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            match self.buf.next()? {
                Next::Frame(body) => return Ok(Some(body)),
                Next::Large { mut body, filled } => {
                    let want = body.len();
                    self.inner.read_exact(&mut body[filled..]).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            FrameError::Truncated { have: filled, want }
                        } else {
                            FrameError::Io(e.to_string())
                        }
                    })?;
                    return Ok(Some(body));
                }
                Next::NeedMore => {
                    let n = loop {
                        match self.inner.read(self.buf.spare()) {
                            Ok(n) => break n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(FrameError::Io(e.to_string())),
                        }
                    };
                    if n == 0 {
                        return self.buf.eof();
                    }
                    self.buf.filled(n);
                }
            }
        }
    }
}

/// Reads frames from an async reader (the host side).
pub(crate) struct AsyncFrameReader<R> {
    inner: R,
    buf: FrameBuffer,
}

impl<R: tokio::io::AsyncRead + Unpin> AsyncFrameReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        AsyncFrameReader {
            inner,
            buf: FrameBuffer::new(max),
        }
    }

    /// Reads more bytes into the buffer; returns how many (0 at EOF).
    pub(crate) async fn fill(&mut self) -> Result<usize, FrameError> {
        use tokio::io::AsyncReadExt;
        let n = self
            .inner
            .read(self.buf.spare())
            .await
            .map_err(|e| FrameError::Io(e.to_string()))?;
        self.buf.filled(n);
        Ok(n)
    }

    pub(crate) fn buffer(&mut self) -> &mut FrameBuffer {
        &mut self.buf
    }

    /// The next frame body; `Ok(None)` on a clean end of stream.
    ///
    /// Cancel safety: not cancel safe for large frames (a partly read large
    /// frame is lost); the host only drops this future when it drops the
    /// whole worker connection.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        use tokio::io::AsyncReadExt;
        loop {
            match self.buf.next()? {
                Next::Frame(body) => return Ok(Some(body)),
                Next::Large { mut body, filled } => {
                    let want = body.len();
                    self.inner
                        .read_exact(&mut body[filled..])
                        .await
                        .map_err(|e| {
                            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                                FrameError::Truncated { have: filled, want }
                            } else {
                                FrameError::Io(e.to_string())
                            }
                        })?;
                    return Ok(Some(body));
                }
                Next::NeedMore => {
                    if self.fill().await? == 0 {
                        return self.buf.eof();
                    }
                }
            }
        }
    }
}

/// Starts a frame in `buf`: reserves the length prefix.
pub(crate) fn begin(buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&[0; PREFIX]);
}

/// Completes a frame started with [`begin`] by writing its length prefix.
/// Fails if the body is larger than `max`.
pub(crate) fn finish(buf: &mut [u8], max: usize) -> Result<(), FrameError> {
    let len = buf.len() - PREFIX;
    if len > max || u32::try_from(len).is_err() {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    buf[..PREFIX].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Writes one frame into `buf` (cleared first): the length prefix, the
/// body `put` appends, then the length. The one way frames are built, with
/// one error policy: `put`'s error, or a body over `max`
/// ([`FrameError::TooLarge`], converted with `From`), is returned and `buf`
/// then holds no frame to send.
pub(crate) fn write_frame<E: From<FrameError>>(
    buf: &mut Vec<u8>,
    max: usize,
    put: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    begin(buf);
    let written = put(buf).and_then(|()| finish(buf, max).map_err(E::from));
    if written.is_err() {
        buf.clear();
    }
    written
}

/// A new frame of about `capacity` bytes whose body `put` writes (see
/// [`write_frame`]).
pub(crate) fn build(
    capacity: usize,
    max: usize,
    put: impl FnOnce(&mut Vec<u8>),
) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::with_capacity(capacity);
    write_frame(&mut buf, max, |b| {
        put(b);
        Ok::<(), FrameError>(())
    })?;
    Ok(buf)
}

/// Appends one frame to the end of `buf`, after the bytes it holds (the
/// [`write_frame`] of a buffer that collects several frames, or that
/// starts with something else, such as the worker's magic bytes).
///
/// # The frame-building policy
///
/// Every frame this crate writes goes through [`write_frame`], [`build`]
/// or this function, which share one rule: a frame is complete or absent.
/// The length prefix is reserved, `put` appends the body, and the prefix
/// is filled in only if `put` succeeded and the body is at most `max`
/// bytes (and fits a `u32`). Otherwise the error (`put`'s own, or
/// [`FrameError::TooLarge`] converted with `From`) is returned and `buf`
/// is back to what it held before the call: nothing half-written, no
/// frame with a zero or wrong length is ever left to be sent.
///
/// What a failure means is decided by the caller, once per kind of frame:
///
/// - a job's result that fails to encode becomes a failure frame for that
///   job, and a result frame too large for `max` (output, or a failure
///   report with a long message) an `EncodeOutput` failure saying so (the
///   host sees `Error::Serialization`); with a small `max` that report's
///   message is cut to fit (`worker::put_outcome`);
/// - a value (task, output or item) is encoded with [`encode_into`],
///   which stops as soon as the value passes `max`, so a value too large
///   fails after `max` bytes of work, not its full size;
/// - a streamed item that fails to encode or is too large panics in the
///   task (the job fails with `Error::Panicked`);
/// - a progress report too large is dropped; start and revoke notices
///   cannot fail (a few bytes, and `max` is at least 64);
/// - the worker's hello failing ends the worker (it exits with its I/O
///   error code);
/// - a job or batch the host cannot frame fails its submission.
pub(crate) fn append_frame<E: From<FrameError>>(
    buf: &mut Vec<u8>,
    max: usize,
    put: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = buf.len();
    buf.extend_from_slice(&[0; PREFIX]);
    let written = put(buf).and_then(|()| finish(&mut buf[start..], max).map_err(E::from));
    if written.is_err() {
        buf.truncate(start);
    }
    written
}

/// Makes room for `additional` more bytes at the end of `buf`. A large new
/// allocation is advised to use huge pages before anything is written to it
/// (see [`sys::advise_huge`]).
pub(crate) fn reserve(buf: &mut Vec<u8>, additional: usize) {
    if buf.capacity() - buf.len() < additional {
        buf.reserve(additional);
        sys::advise_huge(buf);
    }
}

/// Why [`encode_into`] failed.
#[derive(Debug)]
pub(crate) enum EncodeError {
    /// The value's `Serialize` failed (postcard's error).
    Serde(postcard::Error),
    /// The value's encoding passed `max` bytes; encoding stopped there.
    TooLarge { max: usize },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Serde(e) => e.fmt(f),
            EncodeError::TooLarge { max } => write!(
                f,
                "the value is larger than the maximum frame size (`max_frame_size`) of {max} \
                 bytes; encoding stopped there (raise it with `Builder::max_frame_size` if such \
                 values are expected)"
            ),
        }
    }
}

/// Serializes `value` with postcard onto the end of `buf`, keeping what it
/// holds. Byte runs (`serde_bytes` payloads, strings) are appended with one
/// `memcpy`, into room made by [`reserve`].
///
/// Encoding stops with [`EncodeError::TooLarge`] as soon as the value
/// takes more than `max` bytes, so a value too large for a frame costs
/// `max` bytes of work, not its full size. On any error `buf` may hold
/// part of the value: the caller's frame builder discards it.
pub(crate) fn encode_into<T: serde::Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<(), EncodeError> {
    let limit = buf.len().saturating_add(max);
    match postcard::serialize_with_flavor(value, Append { buf, limit }) {
        Ok(()) => Ok(()),
        // Only the flavor reports a full buffer, and only past the limit.
        Err(postcard::Error::SerializeBufferFull) => Err(EncodeError::TooLarge { max }),
        Err(e) => Err(EncodeError::Serde(e)),
    }
}

/// The largest value a worker encodes (its output, or a streamed item):
/// the worker's maximum frame size, set when it starts serving.
static WORKER_MAX: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_FRAME);

/// Sets the worker's maximum frame size (see [`worker_max`]).
pub(crate) fn set_worker_max(max: usize) {
    WORKER_MAX.store(max, std::sync::atomic::Ordering::Relaxed);
}

/// The worker's maximum frame size, the limit of the values it encodes.
pub(crate) fn worker_max() -> usize {
    WORKER_MAX.load(std::sync::atomic::Ordering::Relaxed)
}

/// The postcard output flavor of [`encode_into`]: appends to the vector,
/// refusing to grow it past `limit` bytes.
struct Append<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
}

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.buf.len() >= self.limit {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > self.limit.saturating_sub(self.buf.len()) {
            return Err(postcard::Error::SerializeBufferFull);
        }
        reserve(self.buf, data.len());
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads a LEB128 varint from the front of `bytes`, advancing it.
pub(crate) fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        let part = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None;
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        begin(&mut b);
        b.extend_from_slice(body);
        finish(&mut b, usize::MAX >> 1).unwrap();
        b
    }

    #[test]
    fn append_frame_appends_a_whole_frame_or_nothing() {
        let mut buf = b"magic".to_vec();
        append_frame(&mut buf, 8, |b| {
            b.extend_from_slice(b"body");
            Ok::<(), FrameError>(())
        })
        .unwrap();
        let mut expected = b"magic".to_vec();
        expected.extend(frame(b"body"));
        assert_eq!(buf, expected);

        // Over the maximum: an error, and the buffer as it was.
        let e = append_frame(&mut buf, 8, |b| {
            b.extend_from_slice(b"nine bytes");
            Ok::<(), FrameError>(())
        });
        assert_eq!(e, Err(FrameError::TooLarge { len: 10, max: 8 }));
        assert_eq!(buf, expected);

        // `put` fails: its error, and the buffer as it was.
        let e = append_frame(&mut buf, 8, |b| {
            b.push(1);
            Err(FrameError::Io("no".into()))
        });
        assert_eq!(e, Err(FrameError::Io("no".into())));
        assert_eq!(buf, expected);
    }

    #[test]
    fn encoding_stops_as_soon_as_a_value_passes_the_limit() {
        let mut buf = b"head".to_vec();
        // 100 bytes of string plus a one-byte length: 101 bytes.
        let value = "x".repeat(100);
        encode_into(&value, &mut buf, 101).unwrap();
        assert_eq!(buf.len(), 4 + 101);
        let mut buf = b"head".to_vec();
        assert!(matches!(
            encode_into(&value, &mut buf, 100),
            Err(EncodeError::TooLarge { max: 100 })
        ));
        // The string's bytes were refused whole: nothing past the limit.
        assert!(buf.len() <= 4 + 100);
        // Element by element (a plain `Vec<u8>`): stops at the limit.
        let mut buf = Vec::new();
        let e = encode_into(&vec![0u8; 1 << 20], &mut buf, 1000).unwrap_err();
        assert!(matches!(e, EncodeError::TooLarge { max: 1000 }));
        assert_eq!(buf.len(), 1000);
        assert!(e.to_string().contains("of 1000 bytes"), "{e}");
    }

    #[test]
    fn varint_round_trips_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut s = &b[..];
            assert_eq!(take_varint(&mut s), Some(v));
            assert!(s.is_empty());
        }
        let mut s: &[u8] = &[0xff; 11];
        assert_eq!(take_varint(&mut s), None);
    }

    #[test]
    fn splits_a_stream_into_frames_in_any_chunking() {
        let mut stream = Vec::new();
        let bodies: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; i * 7]).collect();
        for b in &bodies {
            stream.extend(frame(b));
        }
        for chunk in [1, 3, 7, 64, 4096] {
            let reader = ChunkedReader {
                data: stream.clone(),
                pos: 0,
                chunk,
            };
            let mut r = SyncFrameReader::new(reader, 1 << 20);
            for b in &bodies {
                assert_eq!(&r.next_frame().unwrap().unwrap(), b);
            }
            assert_eq!(r.next_frame().unwrap(), None);
        }
    }

    #[test]
    fn large_frames_bypass_the_chunk_buffer() {
        let body = vec![7u8; CHUNK * 3 + 5];
        let mut stream = frame(&body);
        stream.extend(frame(b"after"));
        let mut r = SyncFrameReader::new(&stream[..], 1 << 20);
        assert_eq!(r.next_frame().unwrap().unwrap(), body);
        assert_eq!(r.next_frame().unwrap().unwrap(), b"after");
    }

    #[test]
    fn oversized_length_is_rejected_before_allocating() {
        let stream = u32::MAX.to_le_bytes();
        let mut r = SyncFrameReader::new(&stream[..], 1024);
        assert!(matches!(
            r.next_frame(),
            Err(FrameError::TooLarge { max: 1024, .. })
        ));
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let mut stream = frame(b"hello");
        stream.pop();
        let mut r = SyncFrameReader::new(&stream[..], 1024);
        assert!(matches!(r.next_frame(), Err(FrameError::Truncated { .. })));
    }

    struct ChunkedReader {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
    }

    impl std::io::Read for ChunkedReader {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }
}
