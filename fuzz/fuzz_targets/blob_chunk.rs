//! A fetched blob chunk as the worker checks it: the first bytes give the request (offset,
//! max_len), the rest is the response. An accepted chunk must lie inside the blob and the request.
#![no_main]

use hearth_proto::{BlobRequest, BlobResponse, ContentId, Wire, MAX_BLOB_CHUNK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<12>() else {
        return;
    };
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&head[..8]);
    let mut max_len = [0u8; 4];
    max_len.copy_from_slice(&head[8..]);
    let Ok(resp) = BlobResponse::from_bytes(body) else {
        return;
    };
    // Ask for the blob the response names half the time, so the range checks are reached.
    let cid = match (&resp, offset[0] & 1) {
        (BlobResponse::Chunk { cid, .. } | BlobResponse::NotFound { cid }, 0) => *cid,
        _ => ContentId::of(b"another blob"),
    };
    let req = BlobRequest {
        cid,
        offset: u64::from_le_bytes(offset),
        max_len: u32::from_le_bytes(max_len),
    };
    if resp.check_answers(&req).is_ok() {
        if let BlobResponse::Chunk {
            cid,
            total_len,
            offset,
            data,
        } = &resp
        {
            assert_eq!(*cid, req.cid);
            assert_eq!(*offset, req.offset);
            assert!(data.len() <= req.max_len.min(MAX_BLOB_CHUNK) as usize);
            assert!(offset
                .checked_add(data.len() as u64)
                .is_some_and(|e| e <= *total_len));
        } else {
            assert!(matches!(resp, BlobResponse::NotFound { cid } if cid == req.cid));
        }
    }
});
