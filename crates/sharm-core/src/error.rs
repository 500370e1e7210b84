//! Errors of the core. Each maps to one stable `ERR_SHARM_*` code in the Node layer.

use std::fmt;

use crate::record::{Kind, KNOWN_FLAGS};

/// What was wrong with bytes read from shared memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    BadKind(u8),
    BadFlags(u8),
    RecordTooLong {
        len: u64,
        max: u64,
    },
    /// The record does not fit in what the peer published, or in the bytes left to the end.
    RecordOverrun {
        need: u64,
        available: u64,
    },
    /// The peer's index is further away than the ring is big.
    BadIndex {
        distance: u64,
        capacity: u64,
    },
    BadChunk(&'static str),
    MessageTooLarge {
        len: u64,
        max: u64,
    },
    /// The segment header (the `attach` word or a side's slot) holds what the protocol never
    /// writes there.
    Header(String),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadKind(k) => {
                let (first, last) = (Kind::ALL[0] as u8, Kind::ALL[Kind::ALL.len() - 1] as u8);
                write!(f, "unknown record kind {k} (expected {first}..={last})")
            }
            ProtocolError::BadFlags(x) => write!(f, "invalid record flags {x:#04x} (known bits {KNOWN_FLAGS:#04x})"),
            ProtocolError::RecordTooLong { len, max } => {
                write!(
                    f,
                    "record claims {len} payload bytes, more than the {max} a record may carry"
                )
            }
            ProtocolError::RecordOverrun { need, available } => {
                write!(f, "record needs {need} bytes but only {available} are there")
            }
            ProtocolError::BadIndex { distance, capacity } => {
                write!(
                    f,
                    "ring index is {distance} bytes away from ours, more than the capacity {capacity}"
                )
            }
            ProtocolError::BadChunk(why) => write!(f, "bad chunk sequence: {why}"),
            ProtocolError::MessageTooLarge { len, max } => {
                write!(f, "message claims {len} bytes, more than maxMessageBytes ({max})")
            }
            ProtocolError::Header(what) => f.write_str(what),
        }
    }
}

/// Errors of channel operations.
#[derive(Debug)]
pub enum Error {
    /// Two live processes already hold the channel.
    Busy(String),
    /// The segment holds something we cannot speak: wrong magic or version, or a corrupt record.
    Protocol(String),
    /// Bad argument or option.
    Invalid(String),
    /// The local queue is over its limit; nothing was taken.
    QueueFull { queued: usize, limit: usize },
    /// The message is larger than `maxMessageBytes`.
    TooLarge { len: usize, max: usize },
    /// The channel was closed.
    Closed,
    /// A blocking request timed out.
    Timeout(u32),
    /// The peer went away while a blocking request waited.
    PeerGone,
    /// The peer answered a blocking request with an error.
    Remote(String),
    /// The operating system refused something (create/open/map).
    Os(String),
}

impl Error {
    /// Every code [`Error::code`] can return.
    pub const CODES: [&'static str; 10] = [
        "ERR_SHARM_BUSY",
        "ERR_SHARM_PROTOCOL",
        "ERR_SHARM_INVALID",
        "ERR_SHARM_QUEUE_FULL",
        "ERR_SHARM_TOO_LARGE",
        "ERR_SHARM_CLOSED",
        "ERR_SHARM_TIMEOUT",
        "ERR_SHARM_PEER_GONE",
        "ERR_SHARM_REMOTE",
        "ERR_SHARM_OS",
    ];

    /// The stable code the Node layer exposes.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Busy(_) => "ERR_SHARM_BUSY",
            Error::Protocol(_) => "ERR_SHARM_PROTOCOL",
            Error::Invalid(_) => "ERR_SHARM_INVALID",
            Error::QueueFull { .. } => "ERR_SHARM_QUEUE_FULL",
            Error::TooLarge { .. } => "ERR_SHARM_TOO_LARGE",
            Error::Closed => "ERR_SHARM_CLOSED",
            Error::Timeout(_) => "ERR_SHARM_TIMEOUT",
            Error::PeerGone => "ERR_SHARM_PEER_GONE",
            Error::Remote(_) => "ERR_SHARM_REMOTE",
            Error::Os(_) => "ERR_SHARM_OS",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Busy(m) | Error::Protocol(m) | Error::Invalid(m) | Error::Os(m) => f.write_str(m),
            Error::QueueFull { queued, limit } => {
                write!(f, "send queue is full: {queued} bytes queued, maxQueueBytes is {limit}")
            }
            Error::TooLarge { len, max } => {
                write!(f, "message of {len} bytes is larger than maxMessageBytes ({max})")
            }
            Error::Closed => f.write_str("channel is closed"),
            Error::Timeout(ms) => write!(f, "no answer within {ms} ms"),
            Error::PeerGone => f.write_str("the peer process left the channel before answering"),
            Error::Remote(m) => write!(f, "the peer's handler failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        match e {
            // Anyone with write access to the segment may have written it, not only the peer.
            ProtocolError::Header(what) => Error::Protocol(format!("corrupt channel header in shared memory: {what}")),
            e => Error::Protocol(format!("protocol error from the peer: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_lists_every_code_once() {
        let all = [
            Error::Busy(String::new()),
            Error::Protocol(String::new()),
            Error::Invalid(String::new()),
            Error::QueueFull { queued: 0, limit: 0 },
            Error::TooLarge { len: 0, max: 0 },
            Error::Closed,
            Error::Timeout(0),
            Error::PeerGone,
            Error::Remote(String::new()),
            Error::Os(String::new()),
        ];
        let codes: Vec<&str> = all.iter().map(Error::code).collect();
        assert_eq!(codes, Error::CODES);
    }
}
