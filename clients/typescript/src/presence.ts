// Presence (docs/PROTOCOL.md §8.2): member lists per topic, kept from the
// `$sb:join` / `$sb:leave` events of topics that have them, and from lists
// the application hands over (the chat's `ROOM_MEMBERS`).

import type { Envelope } from "./codec.js";

/** `$sb:join`. */
export const JOIN = "$sb:join";
/** `$sb:leave`. */
export const LEAVE = "$sb:leave";

/** One subscriber of a topic. */
export interface PresenceMember {
  /** Its connection id. */
  clientId: string;
  /** What the application stored when it subscribed (the chat: `{username}`). */
  info: unknown;
}

/** A subscriber came or went. */
export interface PresenceEvent {
  /** `"join"` or `"leave"`. */
  kind: "join" | "leave";
  /** The topic. */
  topic: string;
  /** Who. */
  clientId: string;
  /** With `"join"`: what the application stored for it. */
  info?: unknown;
}

/** Member lists by topic. */
export class Presence {
  private readonly topics = new Map<string, Map<string, unknown>>();

  /** @param event receives every join and leave */
  constructor(private readonly event: (e: PresenceEvent) => void) {}

  /** The members of `topic` known to this client. */
  members(topic: string): PresenceMember[] {
    const members = this.topics.get(topic);
    return members === undefined ? [] : [...members].map(([clientId, info]) => ({ clientId, info }));
  }

  /** Replaces the list of `topic` (from an application message). */
  set(topic: string, members: readonly PresenceMember[]): void {
    this.topics.set(topic, new Map(members.map((m) => [m.clientId, m.info])));
  }

  /** Forgets `topic` (the client stopped being a subscriber). */
  forget(topic: string): void {
    this.topics.delete(topic);
  }

  /** Handles `$sb:join` / `$sb:leave`; false when `envelope` is neither. */
  observe(envelope: Envelope): boolean {
    if (envelope.type !== JOIN && envelope.type !== LEAVE) return false;
    const p = envelope.payload;
    if (typeof p !== "object" || p === null) return true;
    const { topic, clientId, info } = p as { topic?: unknown; clientId?: unknown; info?: unknown };
    if (typeof topic !== "string" || typeof clientId !== "string") return true;
    let members = this.topics.get(topic);
    if (envelope.type === JOIN) {
      if (members === undefined) {
        members = new Map();
        this.topics.set(topic, members);
      }
      members.set(clientId, info ?? null);
      this.event({ kind: "join", topic, clientId, info: info ?? null });
    } else {
      members?.delete(clientId);
      this.event({ kind: "leave", topic, clientId });
    }
    return true;
  }
}
