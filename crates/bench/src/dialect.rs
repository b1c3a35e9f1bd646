//! How a server frames y-protocols messages on the wire, sans-IO: the plain
//! y-websocket framing (Tandem, `@y/websocket-server`, y-sweet) and the
//! Hocuspocus one. Everything else in the bench speaks plain y-protocols;
//! [`Dialect::wrap`] and [`Dialect::decode`] are the only places that differ.
//!
//! ## y-websocket
//!
//! The document is named by the URL; each binary frame carries one
//! y-protocols message (`varUint type` then its payload; 0 sync, 1
//! awareness, 2 auth, 3 query-awareness).
//!
//! ## Hocuspocus (`@hocuspocus/server` 4.x)
//!
//! One socket may multiplex several documents, so the URL names none. Every
//! frame, in both directions, starts with the document name as a lib0
//! `varString` (varUint byte length, then UTF-8), followed by a message type:
//!
//! | type | meaning | payload |
//! |---|---|---|
//! | 0 | sync | a y-protocols sync message (step1 / step2 / update) |
//! | 1 | awareness | a y-protocols awareness update |
//! | 2 | auth | varUint sub-type (0 token, 1 permission denied, 2 authenticated) + varString |
//! | 3 | query awareness | — |
//! | 4 | sync reply | as 0; the server uses it for its answers to our step1 |
//! | 8 | sync status | varUint 1/0: the server applied (or refused) our update |
//!
//! The server queues every frame of a document until that document's Auth
//! message (`name, 2, 0, varString token`) has passed its `onAuthenticate`
//! hooks (`ClientConnection.handleQueueingMessage`), so the Auth frame goes
//! first. The bench opens one socket per client, as the provider does per
//! document. Hocuspocus also closes a socket that sent no message for its
//! `timeout` (60 s by default); a real provider renews awareness every 15 s,
//! so idle bench clients send a query-awareness at that period
//! ([`Dialect::keepalive`]).

use std::time::Duration;

use yrs::encoding::read::Error as ReadError;

use crate::protocol::{Incoming, decode_frame};

/// The framing a server speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialect {
    /// y-websocket: the URL names the document, frames are bare messages.
    YWebsocket,
    /// Hocuspocus: every frame is prefixed with this document name.
    Hocuspocus {
        /// The document this socket is about.
        doc: String,
    },
}

/// Message type of a Hocuspocus auth message.
const HP_AUTH: u64 = 2;
/// Auth sub-type: the client presents a token.
const HP_AUTH_TOKEN: u64 = 0;
/// Message type of a query-awareness message (same as y-protocols).
const HP_QUERY_AWARENESS: u64 = 3;
/// Hocuspocus' "sync reply": a sync message that must not trigger another step1.
const HP_SYNC_REPLY: u64 = 4;
/// y-protocols' sync message type.
const SYNC: u64 = 0;
/// y-protocols' awareness message type.
const AWARENESS: u64 = 1;

/// A socket and the dialect it speaks: where a client connects.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `ws://host:port/path`.
    pub url: String,
    /// How frames on it are framed.
    pub dialect: Dialect,
}

impl Dialect {
    /// Frames to send right after the WebSocket opens, before anything else.
    pub fn hello(&self) -> Vec<Vec<u8>> {
        match self {
            Dialect::YWebsocket => Vec::new(),
            Dialect::Hocuspocus { doc } => {
                let mut frame = prefix(doc);
                write_var(&mut frame, HP_AUTH);
                write_var(&mut frame, HP_AUTH_TOKEN);
                write_string(&mut frame, "tandem-bench");
                vec![frame]
            }
        }
    }

    /// One y-protocols message as this dialect's frame.
    pub fn wrap(&self, msg: Vec<u8>) -> Vec<u8> {
        match self {
            Dialect::YWebsocket => msg,
            Dialect::Hocuspocus { doc } => {
                let mut frame = prefix(doc);
                frame.extend_from_slice(&msg);
                frame
            }
        }
    }

    /// Every message of one incoming frame.
    pub fn decode(&self, frame: &[u8]) -> Result<Vec<Incoming>, ReadError> {
        match self {
            Dialect::YWebsocket => decode_frame(frame),
            Dialect::Hocuspocus { .. } => {
                let mut pos = 0;
                let name_len = read_var(frame, &mut pos)? as usize;
                pos = pos
                    .checked_add(name_len)
                    .filter(|&p| p <= frame.len())
                    .ok_or(ReadError::EndOfBuffer(name_len))?;
                let body = &frame[pos..];
                let mut at = 0;
                match read_var(body, &mut at)? {
                    SYNC | AWARENESS => decode_frame(body),
                    HP_SYNC_REPLY => {
                        let mut msg = Vec::with_capacity(body.len());
                        write_var(&mut msg, SYNC);
                        msg.extend_from_slice(&body[at..]);
                        decode_frame(&msg)
                    }
                    _ => Ok(vec![Incoming::Other]),
                }
            }
        }
    }

    /// How often an otherwise idle client must send something to be kept.
    pub fn keepalive(&self) -> Option<(Duration, Vec<u8>)> {
        match self {
            Dialect::YWebsocket => None,
            Dialect::Hocuspocus { .. } => {
                let mut msg = Vec::new();
                write_var(&mut msg, HP_QUERY_AWARENESS);
                Some((Duration::from_secs(15), self.wrap(msg)))
            }
        }
    }
}

fn prefix(doc: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(doc.len() + 16);
    write_string(&mut out, doc);
    out
}

/// lib0 varUint: 7 bits per byte, low first, high bit = more.
fn write_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    write_var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn read_var(buf: &[u8], pos: &mut usize) -> Result<u64, ReadError> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos).ok_or(ReadError::EndOfBuffer(1))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            return Err(ReadError::InvalidVarInt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::update_message;

    fn hocuspocus() -> Dialect {
        Dialect::Hocuspocus {
            doc: "doc-é".into(),
        }
    }

    #[test]
    fn hocuspocus_auth_frame_names_the_document_then_presents_a_token() {
        let hello = hocuspocus().hello();
        assert_eq!(hello.len(), 1);
        let frame = &hello[0];
        let name = "doc-é".as_bytes();
        assert_eq!(frame[0] as usize, name.len());
        assert_eq!(&frame[1..1 + name.len()], name);
        assert_eq!(&frame[1 + name.len()..3 + name.len()], &[2, 0]);
        assert_eq!(&frame[4 + name.len()..], b"tandem-bench");
    }

    #[test]
    fn hocuspocus_frames_round_trip_and_sync_replies_read_as_sync() {
        let d = hocuspocus();
        let frame = d.wrap(update_message(vec![0, 0]));
        assert!(matches!(
            d.decode(&frame).unwrap()[..],
            [Incoming::Update(_)]
        ));
        let mut reply = prefix("doc-é");
        reply.push(HP_SYNC_REPLY as u8);
        reply.extend_from_slice(&update_message(vec![0, 0])[1..]);
        assert!(matches!(
            d.decode(&reply).unwrap()[..],
            [Incoming::Update(_)]
        ));
    }

    #[test]
    fn hocuspocus_status_and_auth_replies_are_other_and_truncation_is_an_error() {
        let d = hocuspocus();
        let mut status = prefix("doc-é");
        status.extend_from_slice(&[8, 1]);
        assert!(matches!(d.decode(&status).unwrap()[..], [Incoming::Other]));
        assert!(d.decode(&[200]).is_err());
        assert!(d.decode(&[5, b'a']).is_err());
    }

    #[test]
    fn y_websocket_frames_are_bare_messages() {
        let msg = update_message(vec![0, 0]);
        assert_eq!(Dialect::YWebsocket.wrap(msg.clone()), msg);
        assert!(Dialect::YWebsocket.hello().is_empty());
        assert!(Dialect::YWebsocket.keepalive().is_none());
    }

    #[test]
    fn long_varints_round_trip() {
        for v in [0u64, 127, 128, 300, 1 << 40] {
            let mut b = Vec::new();
            write_var(&mut b, v);
            let mut pos = 0;
            assert_eq!(read_var(&b, &mut pos).unwrap(), v);
            assert_eq!(pos, b.len());
        }
    }
}
