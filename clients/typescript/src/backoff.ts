// Reconnect delays, as the Rust client computes them (core/src/client/backoff.rs):
// `initial`, doubling up to `max`, each drawn at random from its upper half so
// that clients dropped together do not come back together.

/** Reconnect delays: exponential, capped, with jitter. */
export class Backoff {
  private attempts = 0;

  /**
   * @param initialMs the first delay's ceiling
   * @param maxMs the largest delay
   * @param random a source of numbers in [0, 1)
   */
  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** Attempts made since the last success. */
  get attempt(): number {
    return this.attempts;
  }

  /** Starts over after a success. */
  reset(): void {
    this.attempts = 0;
  }

  /** The next delay, in milliseconds. */
  next(): number {
    const ceiling = Math.min(
      this.initialMs * 2 ** Math.min(this.attempts, 20),
      Math.max(this.maxMs, this.initialMs),
    );
    this.attempts += 1;
    return ceiling * (0.5 + 0.5 * this.random());
  }
}
