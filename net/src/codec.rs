//! Length-prefixed byte codec for request-response, with reads capped while reading.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes. A length above the
//! limit is refused before anything else is read, and the body is read through
//! `take(len)`, so a lying peer can never make us allocate more than the limit.

use std::{
    io,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};

/// Bytes reserved up front for a frame body; larger bodies grow as data really arrives.
const INITIAL_RESERVE: usize = 64 * 1024;

/// The request-response codec: opaque bytes both ways, each direction with its own cap.
/// Clones share the caps and the rejection counter, so a node's caps grow in one place when it
/// enters a run ([`BytesCodec::grow_caps`]).
#[derive(Clone, Debug)]
pub struct BytesCodec {
    max_request_bytes: Arc<AtomicUsize>,
    max_response_bytes: Arc<AtomicUsize>,
    /// Inbound frames refused for their size, shared by every clone.
    rejected: Arc<AtomicU64>,
}

impl BytesCodec {
    /// A codec with these caps and a fresh rejection counter.
    pub fn new(max_request_bytes: usize, max_response_bytes: usize) -> Self {
        BytesCodec {
            max_request_bytes: Arc::new(AtomicUsize::new(max_request_bytes)),
            max_response_bytes: Arc::new(AtomicUsize::new(max_response_bytes)),
            rejected: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many inbound frames (requests or responses) were refused as oversized.
    pub fn rejected_frames(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// The largest request accepted now.
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes.load(Ordering::Relaxed)
    }

    /// The largest response accepted now.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes.load(Ordering::Relaxed)
    }

    /// Raises the caps to `request` and `response` (a lower value leaves a cap as it is), for
    /// every clone: streams opened afterwards read with the new caps.
    pub fn grow_caps(&self, request: usize, response: usize) {
        self.max_request_bytes.fetch_max(request, Ordering::Relaxed);
        self.max_response_bytes
            .fetch_max(response, Ordering::Relaxed);
    }

    fn count<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            if e.kind() == io::ErrorKind::InvalidData {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(error = %e, "inbound frame refused");
        }
        result
    }
}

/// Reads one length-prefixed frame of at most `limit` bytes.
pub async fn read_frame<T>(io: &mut T, limit: usize, what: &str) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} of {len} bytes exceeds the limit of {limit} bytes"),
        ));
    }
    let mut body = Vec::with_capacity(len.min(INITIAL_RESERVE));
    io.take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{what} announced {len} bytes but the stream ended after {}",
                body.len()
            ),
        ));
    }
    Ok(body)
}

/// Writes one length-prefixed frame, refusing bodies larger than `limit`.
pub async fn write_frame<T>(io: &mut T, data: &[u8], limit: usize, what: &str) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(data.len())
        .ok()
        .filter(|len| (*len as usize) <= limit)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{what} of {} bytes exceeds the limit of {limit} bytes",
                    data.len()
                ),
            )
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let read = read_frame(io, self.max_request_bytes(), "request").await;
        self.count(read)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let read = read_frame(io, self.max_response_bytes(), "response").await;
        self.count(read)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        // Our own cap is not the remote's: write what the caller checked, up to the frame limit.
        write_frame(io, &req, crate::config::MAX_FRAME_BYTES, "request").await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, crate::config::MAX_FRAME_BYTES, "response").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    fn frame(len_prefix: u32, body: &[u8]) -> Vec<u8> {
        let mut v = len_prefix.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn round_trip_keeps_bytes() {
        let mut buf = Cursor::new(Vec::new());
        write_frame(&mut buf, b"hello", 10, "request")
            .await
            .unwrap();
        assert_eq!(buf.get_ref().len(), 9);
        buf.set_position(0);
        let back = read_frame(&mut buf, 10, "request").await.unwrap();
        assert_eq!(back, b"hello");
    }

    #[tokio::test]
    async fn empty_frame_is_valid() {
        let mut io = Cursor::new(frame(0, b""));
        assert_eq!(
            read_frame(&mut io, 0, "request").await.unwrap(),
            Vec::<u8>::new()
        );
    }

    #[tokio::test]
    async fn oversized_prefix_is_refused_before_reading() {
        // Claims 4 GiB; must fail at once without allocating.
        let mut io = Cursor::new(frame(u32::MAX, b"abc"));
        let err = read_frame(&mut io, 1024, "request").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string()
                .contains("4294967295 bytes exceeds the limit of 1024"),
            "{err}"
        );
        assert_eq!(io.position(), 4, "only the prefix may be consumed");
    }

    #[tokio::test]
    async fn limit_is_inclusive() {
        let body = vec![7u8; 1024];
        let mut io = Cursor::new(frame(1024, &body));
        assert_eq!(read_frame(&mut io, 1024, "response").await.unwrap(), body);
        let mut io = Cursor::new(frame(1025, &[7u8; 1025]));
        assert!(read_frame(&mut io, 1024, "response").await.is_err());
    }

    #[tokio::test]
    async fn truncated_body_is_an_error() {
        let mut io = Cursor::new(frame(10, b"short"));
        let err = read_frame(&mut io, 100, "request").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("after 5"), "{err}");
        let mut io = Cursor::new(vec![0u8, 0]);
        assert!(read_frame(&mut io, 100, "request").await.is_err());
    }

    #[tokio::test]
    async fn codec_counts_oversized_frames_only() {
        use libp2p::request_response::Codec;
        let proto = StreamProtocol::new("/t/1");
        let mut codec = BytesCodec::new(8, 4);
        let shared = codec.clone();
        let mut io = Cursor::new(frame(9, &[0u8; 9]));
        assert!(codec.read_request(&proto, &mut io).await.is_err());
        let mut io = Cursor::new(frame(5, &[0u8; 5]));
        assert!(codec.read_response(&proto, &mut io).await.is_err());
        let mut io = Cursor::new(frame(3, b"ab"));
        assert!(
            codec.read_request(&proto, &mut io).await.is_err(),
            "truncated"
        );
        let mut io = Cursor::new(frame(8, &[1u8; 8]));
        assert_eq!(
            codec.read_request(&proto, &mut io).await.unwrap(),
            vec![1u8; 8]
        );
        assert_eq!(
            shared.rejected_frames(),
            2,
            "two oversized frames, truncation not counted"
        );
    }

    #[tokio::test]
    async fn grown_caps_apply_to_every_clone_and_never_shrink() {
        use libp2p::request_response::Codec;
        let proto = StreamProtocol::new("/t/1");
        let codec = BytesCodec::new(8, 4);
        let mut other = codec.clone();
        let mut io = Cursor::new(frame(12, &[2u8; 12]));
        assert!(other.read_request(&proto, &mut io).await.is_err());
        codec.grow_caps(16, 2);
        assert_eq!(
            (other.max_request_bytes(), other.max_response_bytes()),
            (16, 4)
        );
        let mut io = Cursor::new(frame(12, &[2u8; 12]));
        assert_eq!(
            other.read_request(&proto, &mut io).await.unwrap(),
            vec![2u8; 12]
        );
        assert_eq!(codec.rejected_frames(), 1);
    }

    #[tokio::test]
    async fn write_refuses_over_limit() {
        let mut buf = Cursor::new(Vec::new());
        let err = write_frame(&mut buf, &[0u8; 11], 10, "response")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(buf.get_ref().is_empty());
    }
}
