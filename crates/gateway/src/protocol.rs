//! The y-protocols wire format, sans I/O: frames in, typed messages out, and
//! the encoders for what the server sends.
//!
//! Message type varUint: 0 sync (0 SyncStep1, 1 SyncStep2, 2 Update),
//! 1 awareness, 2 auth, 3 query-awareness. A frame may carry several
//! messages; [`decode_frame`] returns all of them or none (a frame with any
//! bad message is rejected whole, so nothing of it reaches the room).
//! The server sends one message per frame: the JS client reads only the first.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use yrs::StateVector;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

use crate::close::CloseCode;

const MSG_SYNC: u8 = 0;
const MSG_AWARENESS: u8 = 1;
const MSG_AUTH: u8 = 2;
const MSG_QUERY_AWARENESS: u8 = 3;
const SYNC_STEP1: u8 = 0;
const SYNC_STEP2: u8 = 1;
const SYNC_UPDATE: u8 = 2;

/// One decoded client message.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// The client's state vector: answer with what it lacks (SyncStep2).
    SyncStep1(StateVector),
    /// A document change (from SyncStep2 or Update), v1-encoded, as received.
    /// Its content is read by the room on a yrs thread (`inspect`), not here:
    /// decoding is yrs work and must not run on the runtime's workers.
    Update(Bytes),
    /// Cursor/presence states of one or more client ids.
    Awareness(AwarenessUpdate),
    /// The client asks for every current awareness state.
    QueryAwareness,
    /// An auth message: there is no auth yet, so it is ignored.
    Auth,
}

/// Why a frame was rejected; maps to a close code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// Truncated varint or buffer, bad UTF-8, undecodable payload.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A sync message with a sub-type other than 0, 1, 2.
    #[error("unknown sync message sub-type {0}")]
    UnknownSyncType(u64),
    /// A top-level message type other than 0-3.
    #[error("unknown message type {0}")]
    UnknownType(u64),
}

impl ProtocolError {
    /// The close code the offending connection gets.
    pub(crate) fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::UnknownType(_) => CloseCode::UnknownMessageType,
            _ => CloseCode::Malformed,
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Malformed(e.to_string())
}

/// Decodes every message of one binary frame. `frame` is shared so updates
/// keep referring to it without a copy.
pub(crate) fn decode_frame(frame: &Bytes) -> Result<Vec<Inbound>, ProtocolError> {
    let mut cursor = Cursor::new(frame);
    let mut out = Vec::new();
    while cursor.has_content() {
        out.push(decode_message(frame, &mut cursor)?);
    }
    Ok(out)
}

fn decode_message(frame: &Bytes, cursor: &mut Cursor<'_>) -> Result<Inbound, ProtocolError> {
    let tag: u64 = cursor.read_var().map_err(malformed)?;
    match tag {
        t if t == MSG_SYNC as u64 => {
            let sub: u64 = cursor.read_var().map_err(malformed)?;
            let len = cursor.read_buf().map_err(malformed)?.len();
            let raw = frame.slice(cursor.next - len..cursor.next);
            match sub {
                s if s == SYNC_STEP1 as u64 => {
                    let sv = guarded(|| StateVector::decode_v1(&raw))?.map_err(malformed)?;
                    Ok(Inbound::SyncStep1(sv))
                }
                s if s == SYNC_STEP2 as u64 || s == SYNC_UPDATE as u64 => Ok(Inbound::Update(raw)),
                s => Err(ProtocolError::UnknownSyncType(s)),
            }
        }
        t if t == MSG_AWARENESS as u64 => {
            let buf = cursor.read_buf().map_err(malformed)?;
            let update = guarded(|| AwarenessUpdate::decode_v1(buf))?.map_err(malformed)?;
            for entry in update.clients.values() {
                // JS peers JSON.parse every state: invalid JSON would break them.
                serde_json::from_str::<serde::de::IgnoredAny>(&entry.json)
                    .map_err(|e| malformed(format!("awareness state is not JSON: {e}")))?;
            }
            Ok(Inbound::Awareness(update))
        }
        t if t == MSG_AUTH as u64 => {
            let kind: u64 = cursor.read_var().map_err(malformed)?;
            if kind == 0 {
                cursor.read_string().map_err(malformed)?;
            }
            Ok(Inbound::Auth)
        }
        t if t == MSG_QUERY_AWARENESS as u64 => Ok(Inbound::QueryAwareness),
        t => Err(ProtocolError::UnknownType(t)),
    }
}

/// Runs a yrs decoder, turning a panic on hostile input into an error.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, ProtocolError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| malformed("decoder panicked"))
}

fn frame_with(tag: u8, sub: Option<u8>, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.write_var(tag);
    if let Some(sub) = sub {
        out.write_var(sub);
    }
    out.write_buf(body);
    Bytes::from(out)
}

/// SyncStep1 frame carrying the server's state vector.
pub(crate) fn encode_sync_step1(sv: &StateVector) -> Bytes {
    frame_with(MSG_SYNC, Some(SYNC_STEP1), &sv.encode_v1())
}

/// SyncStep2 frame carrying what the client lacks.
pub(crate) fn encode_sync_step2(diff: &[u8]) -> Bytes {
    frame_with(MSG_SYNC, Some(SYNC_STEP2), diff)
}

/// Update frame carrying one v1 update.
pub(crate) fn encode_update(update: &[u8]) -> Bytes {
    frame_with(MSG_SYNC, Some(SYNC_UPDATE), update)
}

/// Auth frame "permission denied" with `reason` (y-protocols auth.js:
/// message type 2, then varUint 0, then varString reason).
pub(crate) fn encode_permission_denied(reason: &str) -> Bytes {
    let mut out = Vec::with_capacity(reason.len() + 4);
    out.write_var(MSG_AUTH);
    out.write_var(0u8);
    out.write_string(reason);
    Bytes::from(out)
}

/// Awareness frame.
pub(crate) fn encode_awareness(update: &AwarenessUpdate) -> Bytes {
    frame_with(MSG_AWARENESS, None, &update.encode_v1())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact};

    fn update_bytes() -> Vec<u8> {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        text.insert(&mut doc.transact_mut(), 0, "hi");
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    #[test]
    fn frame_with_several_messages_yields_all() {
        let u = update_bytes();
        let mut frame = encode_update(&u).to_vec();
        frame.extend_from_slice(&encode_sync_step1(&StateVector::default()));
        frame.extend_from_slice(&[MSG_QUERY_AWARENESS]);
        let mut msgs = decode_frame(&Bytes::from(frame)).unwrap();
        assert_eq!(msgs.len(), 3);
        match msgs.remove(0) {
            Inbound::Update(raw) => {
                assert_eq!(&raw[..], &u[..]);
                let doc = Doc::new();
                let update = yrs::Update::decode_v1(&raw).unwrap();
                doc.transact_mut().apply_update(update).unwrap();
                let t = doc.get_or_insert_text("content");
                assert_eq!(t.get_string(&doc.transact()), "hi");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_varint_is_malformed() {
        let err = decode_frame(&Bytes::from_static(&[0x80])).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::Malformed);
        let err = decode_frame(&Bytes::from_static(&[0, 2, 0xff])).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::Malformed);
    }

    #[test]
    fn unknown_types_map_to_their_codes() {
        let err = decode_frame(&Bytes::from_static(&[7, 0])).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::UnknownMessageType);
        let err = decode_frame(&Bytes::from_static(&[0, 9, 0])).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::Malformed);
    }
}
