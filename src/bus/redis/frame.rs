//! What nodes say to each other on the bus channel, as bytes: a tag, then
//! length-prefixed fields (`<len>:<bytes>`), so an event's JSON travels as it was stored,
//! neither escaped nor parsed, and a node reads the user before anything else (events of
//! users with no socket on this node are skipped without decoding the rest).
//!
//! - `E` events: node, user, thread, count, then `seq`, `type`, JSON per event;
//! - `S` sync: node, user, thread, seq — "events after this seq of the thread may not have
//!   reached you through Redis (my publish failed): fetch them from the store".

/// A message on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Committed events of one thread, in seq order.
    Events {
        /// The publishing node (it delivered them itself).
        node: u64,
        /// Their user.
        user: &'a str,
        /// Their thread.
        thread: &'a str,
        /// `(seq, type, json)` in seq order.
        events: Vec<(i64, &'a str, &'a str)>,
    },
    /// Events of a thread after `after` may have been lost on the way.
    Sync {
        /// The node whose publish failed.
        node: u64,
        /// The user.
        user: &'a str,
        /// The thread.
        thread: &'a str,
        /// Events after this seq may be missing.
        after: i64,
    },
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// Encodes a message.
pub fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match frame {
        Frame::Events {
            node,
            user,
            thread,
            events,
        } => {
            out.reserve(events.iter().map(|e| e.2.len() + 32).sum());
            out.push(b'E');
            field(&mut out, node.to_string().as_bytes());
            field(&mut out, user.as_bytes());
            field(&mut out, thread.as_bytes());
            field(&mut out, events.len().to_string().as_bytes());
            for (seq, kind, json) in events {
                field(&mut out, seq.to_string().as_bytes());
                field(&mut out, kind.as_bytes());
                field(&mut out, json.as_bytes());
            }
        }
        Frame::Sync {
            node,
            user,
            thread,
            after,
        } => {
            out.push(b'S');
            field(&mut out, node.to_string().as_bytes());
            field(&mut out, user.as_bytes());
            field(&mut out, thread.as_bytes());
            field(&mut out, after.to_string().as_bytes());
        }
    }
    out
}

/// Reads fields off a message.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts on a message; returns its tag.
    pub fn new(bytes: &'a [u8]) -> Option<(u8, Self)> {
        let (&tag, rest) = bytes.split_first()?;
        Some((tag, Self { rest }))
    }

    /// The next field as text.
    pub fn text(&mut self) -> Option<&'a str> {
        let colon = self.rest.iter().position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&self.rest[..colon])
            .ok()?
            .parse()
            .ok()?;
        let start = colon + 1;
        let bytes = self.rest.get(start..start.checked_add(len)?)?;
        self.rest = &self.rest[start + len..];
        std::str::from_utf8(bytes).ok()
    }

    /// The next field as a number.
    pub fn number<N: std::str::FromStr>(&mut self) -> Option<N> {
        self.text()?.parse().ok()
    }
}

/// The sender and user of a message, read without decoding the rest.
pub fn header(bytes: &[u8]) -> Option<(u64, &str)> {
    let (_, mut r) = Reader::new(bytes)?;
    Some((r.number()?, r.text()?))
}

/// Decodes a whole message; `None` when it is not one of ours.
pub fn decode(bytes: &[u8]) -> Option<Frame<'_>> {
    let (tag, mut r) = Reader::new(bytes)?;
    let node = r.number()?;
    let user = r.text()?;
    let thread = r.text()?;
    match tag {
        b'E' => {
            let count: usize = r.number()?;
            let mut events = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                events.push((r.number()?, r.text()?, r.text()?));
            }
            Some(Frame::Events {
                node,
                user,
                thread,
                events,
            })
        }
        b'S' => Some(Frame::Sync {
            node,
            user,
            thread,
            after: r.number()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_sync_round_trip_with_any_text() {
        let events = Frame::Events {
            node: 7,
            user: "ali:ce\n1",
            thread: "t_1",
            events: vec![
                (4, "agent_started", r#"{"type":"agent_started","seq":4}"#),
                (5, "agent_response", "{\"delta\":\"a:b\\n\"}"),
            ],
        };
        let bytes = encode(&events);
        assert_eq!(decode(&bytes), Some(events));
        assert_eq!(header(&bytes), Some((7, "ali:ce\n1")));
        let sync = Frame::Sync {
            node: 1,
            user: "bob",
            thread: "t_2",
            after: 41,
        };
        assert_eq!(decode(&encode(&sync)), Some(sync));
    }

    #[test]
    fn truncated_or_foreign_messages_are_refused() {
        let bytes = encode(&Frame::Sync {
            node: 1,
            user: "bob",
            thread: "t_2",
            after: 41,
        });
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode(b"Xhello"), None);
        assert_eq!(decode(b"E99999999999999999999:x"), None);
    }
}
