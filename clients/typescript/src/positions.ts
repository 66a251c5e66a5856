// The client's side of resume (docs/PROTOCOL.md §8.1), as the Rust client
// does it (core/src/client/resume.rs): the last position seen per topic, the
// `$sb:resume` request after a reconnect, and what became of each topic.

import type { Envelope } from "./codec.js";
import type { ErrorPayload } from "./errors.js";
import { errorPayload } from "./errors.js";

/** A position on a topic with history: positions of different epochs are never compared. */
export interface Position {
  /** The topic's epoch. */
  epoch: string;
  /** The offset within the epoch (1 for the first publication). */
  offset: number;
}

/** What became of one topic when the client resumed it. */
export interface Recovery {
  /** The topic. */
  topic: string;
  /**
   * Whether everything published while the client was away was replayed.
   * When false, refetch what is shown from this topic.
   */
  recovered: boolean;
  /** Where live messages continue. */
  position: Position;
  /** Why the server refused the topic (no longer held), if it did. */
  error?: ErrorPayload;
}

/** `$sb:subscribed` (docs/PROTOCOL.md §8.1). */
export const SUBSCRIBED = "$sb:subscribed";
/** `$sb:unsubscribed`. */
export const UNSUBSCRIBED = "$sb:unsubscribed";
/** `$sb:resume`, sent by the client. */
export const RESUME = "$sb:resume";
/** `$sb:resumed`, the answer. */
export const RESUMED = "$sb:resumed";

function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

/** Positions by topic. */
export class Positions {
  private readonly topics = new Map<string, Position>();

  /** @param recovery receives what became of each resumed topic */
  constructor(private readonly recovery: (r: Recovery) => void) {}

  /** The last position seen per topic. */
  snapshot(): Map<string, Position> {
    return new Map(this.topics);
  }

  /**
   * Notes what `envelope` says about positions. Returns false when it is the
   * protocol's own (consumed here) or a publication already seen (dropped).
   */
  observe(envelope: Envelope): boolean {
    const payload = record(envelope.payload);
    switch (envelope.type) {
      case SUBSCRIBED: {
        const topic = payload?.["topic"];
        const epoch = payload?.["epoch"];
        const offset = payload?.["offset"];
        if (typeof topic === "string" && typeof epoch === "string" && typeof offset === "number") {
          const position = { epoch, offset };
          this.topics.set(topic, position);
          const recovered = payload?.["recovered"];
          if (typeof recovered === "boolean") {
            this.recovery({ topic, recovered, position });
          }
        }
        return false;
      }
      case UNSUBSCRIBED: {
        const topic = payload?.["topic"];
        if (typeof topic === "string") this.topics.delete(topic);
        return false;
      }
      case RESUMED: {
        const topics = payload?.["topics"];
        if (Array.isArray(topics)) {
          for (const outcome of topics) {
            const o = record(outcome);
            const topic = o?.["topic"];
            if (typeof topic !== "string" || o?.["error"] === undefined) continue;
            const error = errorPayload(o["error"]);
            // A topic already held on this connection keeps its position.
            if (error.code === "ALREADY_EXISTS") continue;
            const position = this.topics.get(topic) ?? { epoch: "", offset: 0 };
            this.topics.delete(topic);
            this.recovery({ topic, recovered: false, position, error });
          }
        }
        return false;
      }
      default: {
        const meta = envelope.meta;
        if (
          meta === undefined ||
          typeof meta.topic !== "string" ||
          typeof meta.epoch !== "string" ||
          typeof meta.offset !== "number"
        ) {
          return true;
        }
        return this.advance(meta.topic, { epoch: meta.epoch, offset: meta.offset });
      }
    }
  }

  /** Moves `topic` to `position`; false if it was seen already. */
  private advance(topic: string, position: Position): boolean {
    const last = this.topics.get(topic);
    if (last === undefined) {
      // Not subscribed as far as this client knows: not tracked.
      return true;
    }
    if (last.epoch === position.epoch && position.offset <= last.offset) {
      return false;
    }
    this.topics.set(topic, position);
    return true;
  }

  /** The `$sb:resume` request for every topic held, if any. */
  resumeEnvelope(): Envelope | undefined {
    if (this.topics.size === 0) return undefined;
    const topics = [...this.topics].map(([topic, p]) => ({ topic, epoch: p.epoch, offset: p.offset }));
    return { type: RESUME, payload: { topics } };
  }
}
