//! The client's side of resume (docs/PROTOCOL.md §8): the last position
//! seen on each topic with history, the `$sb:resume` request after a
//! reconnect, and what the server answered, per topic.

use crate::connection::{RESUME_TYPE, RESUMED_TYPE};
use crate::hub::{SUBSCRIBED_TYPE, Subscribed, UNSUBSCRIBED_TYPE};
use crate::topic::history::{META_EPOCH, META_OFFSET, META_TOPIC, Position};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use signalbox_codec::{Envelope, ErrorCode, ErrorPayload, Meta, WireCodec};
use std::collections::BTreeMap;
use tokio::sync::broadcast;

/// What became of one topic when the client resumed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// The topic.
    pub topic: String,
    /// Whether everything published while the client was away was
    /// replayed. When false the application should refetch what it shows
    /// from this topic; live messages continue after `position`.
    pub recovered: bool,
    /// Where live messages continue.
    pub position: Position,
    /// Why the server refused the topic (it is no longer held), if it did.
    pub error: Option<ErrorPayload>,
}

#[derive(Serialize)]
struct ResumeTopic<'a> {
    topic: &'a str,
    epoch: &'a str,
    offset: u64,
}

#[derive(Serialize)]
struct ResumeRequest<'a> {
    topics: Vec<ResumeTopic<'a>>,
}

#[derive(Deserialize)]
struct Outcome {
    topic: String,
    #[serde(default)]
    error: Option<ErrorPayload>,
}

#[derive(Deserialize)]
struct Resumed {
    topics: Vec<Outcome>,
}

#[derive(Deserialize)]
struct Unsubscribed {
    topic: String,
}

/// Positions by topic, and the channel that reports recoveries.
pub(crate) struct Positions {
    topics: Mutex<BTreeMap<String, Position>>,
    events: broadcast::Sender<Recovery>,
}

impl Positions {
    pub(crate) fn new() -> Self {
        Positions {
            topics: Mutex::new(BTreeMap::new()),
            events: broadcast::channel(256).0,
        }
    }

    pub(crate) fn events(&self) -> broadcast::Receiver<Recovery> {
        self.events.subscribe()
    }

    pub(crate) fn snapshot(&self) -> Vec<(String, Position)> {
        self.topics
            .lock()
            .iter()
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect()
    }

    /// Notes what `envelope` says about positions. Returns false when the
    /// envelope is the protocol's own (consumed here) or a publication
    /// already seen (a duplicate the server should never send: dropped).
    pub(crate) fn observe(&self, envelope: &Envelope) -> bool {
        match envelope.ty.as_str() {
            SUBSCRIBED_TYPE => {
                if let Ok(notice) = envelope.decode_payload::<Subscribed>() {
                    let position = Position::new(notice.epoch, notice.offset);
                    self.topics
                        .lock()
                        .insert(notice.topic.clone(), position.clone());
                    if let Some(recovered) = notice.recovered {
                        let _ = self.events.send(Recovery {
                            topic: notice.topic,
                            recovered,
                            position,
                            error: None,
                        });
                    }
                }
                false
            }
            UNSUBSCRIBED_TYPE => {
                if let Ok(notice) = envelope.decode_payload::<Unsubscribed>() {
                    self.topics.lock().remove(&notice.topic);
                }
                false
            }
            RESUMED_TYPE => {
                if let Ok(resumed) = envelope.decode_payload::<Resumed>() {
                    // Refused topics are no longer held; one held already
                    // on this connection keeps its position.
                    let refused = resumed.topics.into_iter().filter(|o| {
                        o.error
                            .as_ref()
                            .is_some_and(|e| e.code != ErrorCode::AlreadyExists)
                    });
                    for refused in refused {
                        let position = self.topics.lock().remove(&refused.topic);
                        let _ = self.events.send(Recovery {
                            topic: refused.topic,
                            recovered: false,
                            position: position.unwrap_or_else(|| Position::new("", 0)),
                            error: refused.error,
                        });
                    }
                }
                false
            }
            _ => match positioned(&envelope.meta) {
                Some((topic, position)) => self.advance(topic, position),
                None => true,
            },
        }
    }

    /// Moves `topic` to `position`; false if it was seen already.
    fn advance(&self, topic: &str, position: Position) -> bool {
        let mut topics = self.topics.lock();
        match topics.get_mut(topic) {
            Some(last) if last.epoch == position.epoch && position.offset <= last.offset => false,
            Some(last) => {
                *last = position;
                true
            }
            // Not subscribed as far as this client knows (its notice is
            // still to come, or the server pushed it): not tracked.
            None => true,
        }
    }

    /// The `$sb:resume` request for every topic held, if any.
    pub(crate) fn resume_frame(&self, codec: &WireCodec) -> Option<Bytes> {
        let topics = self.topics.lock();
        if topics.is_empty() {
            return None;
        }
        let request = ResumeRequest {
            topics: topics
                .iter()
                .map(|(topic, p)| ResumeTopic {
                    topic,
                    epoch: &p.epoch,
                    offset: p.offset,
                })
                .collect(),
        };
        codec
            .encode(RESUME_TYPE, &Meta::default(), Some(&request))
            .map_err(|e| tracing::warn!(error = %e, "resume request could not be encoded"))
            .ok()
    }
}

/// The topic and position a publication carries, if it has them.
fn positioned(meta: &Meta) -> Option<(&str, Position)> {
    let topic = meta.extra.get(META_TOPIC)?.as_str()?;
    let offset = meta.extra.get(META_OFFSET)?.as_u64()?;
    let epoch = meta.extra.get(META_EPOCH)?.as_str()?;
    Some((topic, Position::new(epoch, offset)))
}
