//! Presence: who subscribes to a topic, with what the application said

use super::Registry;
use serde::{Deserialize, Serialize};

/// Presence: who subscribes to a topic, with what the application said
/// about each subscriber (a user name, say).
///
/// Opt-in per topic ([`HubBuilder::presence`](crate::HubBuilder::presence)).
/// A subscriber's entry lives as long as its subscription; with a broker
/// that crosses nodes, the entries of every node are listed
/// ([`Hub::presence`](crate::Hub::presence)).
///
/// One subscriber of a topic with presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The subscriber's connection id (its `clientId`).
    #[serde(rename = "clientId")]
    pub client_id: String,
    /// What the application said about it when it subscribed
    /// ([`SubscribeOptions::presence`](crate::SubscribeOptions::presence));
    /// `null` when nothing.
    #[serde(default)]
    pub info: serde_json::Value,
}

/// The entries of this node's subscribers of `topic`, by client id.
pub(crate) fn local(registry: &Registry, topic: &str) -> Vec<PresenceEntry> {
    let mut entries: Vec<PresenceEntry> = registry
        .entries(topic)
        .into_iter()
        .filter_map(|m| {
            m.presence.map(|info| PresenceEntry {
                client_id: m.conn.id().to_owned(),
                info: (*info).clone(),
            })
        })
        .collect();
    entries.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    entries
}

/// `$sb:join`: a subscriber came to a topic with presence events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceJoined {
    /// The topic.
    pub topic: String,
    /// The newcomer's connection id.
    #[serde(rename = "clientId")]
    pub client_id: String,
    /// What its presence lists (`null` when nothing).
    #[serde(default)]
    pub info: serde_json::Value,
}
crate::message!(PresenceJoined = signalbox_codec::vocab::PRESENCE_JOIN);

/// `$sb:leave`: a subscriber left a topic with presence events
/// (unsubscribed, or its connection closed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceLeft {
    /// The topic.
    pub topic: String,
    /// The leaver's connection id.
    #[serde(rename = "clientId")]
    pub client_id: String,
}
crate::message!(PresenceLeft = signalbox_codec::vocab::PRESENCE_LEAVE);
