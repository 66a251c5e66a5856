// The bounded queue of messages sent while disconnected, with the policies of
// the Rust client (core/src/client/offline.rs).

/**
 * What a full offline queue does with one more message:
 * - `"drop-oldest"` (the default): the oldest queued message is dropped to
 *   make room, and counted in `Client.droppedOffline`; the send succeeds.
 * - `"drop-newest"`: the new message is dropped and counted; the send
 *   succeeds (nothing tells the caller but the count).
 * - `"reject"`: the send fails with `QueueFullError`, and is counted.
 *
 * A request dropped from the queue fails with `DisconnectedError`.
 */
export type OfflinePolicy = "drop-oldest" | "drop-newest" | "reject";

/** What happened to a message offered to the queue. */
export type Queued = "queued" | "dropped-oldest" | "dropped-new" | "rejected";

/** A queue of at most `capacity` items. */
export class OfflineQueue<T> {
  private items: T[] = [];

  /** @param capacity at most this many @param policy what happens when full */
  constructor(
    readonly capacity: number,
    readonly policy: OfflinePolicy,
  ) {}

  /** How many wait. */
  get length(): number {
    return this.items.length;
  }

  /** Offers `item`; `dropped` receives what was dropped to make room. */
  push(item: T, dropped: (item: T) => void): Queued {
    if (this.items.length < this.capacity) {
      this.items.push(item);
      return "queued";
    }
    switch (this.policy) {
      case "drop-oldest":
        if (this.capacity > 0) {
          const oldest = this.items.shift();
          if (oldest !== undefined) dropped(oldest);
          this.items.push(item);
          return "dropped-oldest";
        }
        dropped(item);
        return "dropped-new";
      case "drop-newest":
        dropped(item);
        return "dropped-new";
      case "reject":
        return "rejected";
    }
  }

  /**
   * Puts back, in front and in order, items handed to a connection that
   * died before writing them; past the capacity the oldest go to `dropped`.
   */
  requeueFront(items: T[], dropped: (item: T) => void): void {
    this.items = items.concat(this.items);
    while (this.items.length > this.capacity) {
      const oldest = this.items.shift();
      if (oldest !== undefined) dropped(oldest);
    }
  }

  /** Takes out the first item matching `pred`; whether there was one. */
  withdraw(pred: (item: T) => boolean): boolean {
    const at = this.items.findIndex(pred);
    if (at < 0) return false;
    this.items.splice(at, 1);
    return true;
  }

  /** Takes everything, in order. */
  take(): T[] {
    const out = this.items;
    this.items = [];
    return out;
  }
}
