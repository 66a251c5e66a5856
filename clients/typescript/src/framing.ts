// Length-prefixed framing of a byte stream (docs/PROTOCOL.md §5, the QUIC
// main stream, which WebTransport carries as is): every envelope is a 4-byte
// big-endian length, then that many bytes.

/** Bytes of the length prefix. */
export const HEADER_LEN = 4;

/** A length prefix past the largest frame the reader accepts. */
export class FrameTooLargeError extends Error {
  /**
   * @param length the announced length
   * @param max the largest accepted
   */
  constructor(
    readonly length: number,
    readonly max: number,
  ) {
    super(`a frame of ${length} bytes is past the maximum of ${max}`);
  }

  override get name(): string {
    return "FrameTooLargeError";
  }
}

/** `payload` behind its 4-byte big-endian length, in one array. */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_LEN + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length, false);
  out.set(payload, HEADER_LEN);
  return out;
}

/**
 * Cuts a byte stream into frames, whatever the chunks it arrives in: a
 * chunk may hold several frames, part of one, or end inside a length
 * prefix. Holds at most one partial frame (`max` bytes and its prefix).
 */
export class FrameReader {
  private buf = new Uint8Array(0);
  private start = 0;
  private end = 0;
  private failed: FrameTooLargeError | undefined;

  /** @param max the largest frame accepted, in bytes */
  constructor(readonly max: number) {}

  /** Set once a length prefix was past `max`: the stream is broken. */
  get error(): FrameTooLargeError | undefined {
    return this.failed;
  }

  /** Bytes held of a frame not yet complete. */
  get buffered(): number {
    return this.end - this.start;
  }

  /**
   * Adds `chunk`; returns the frames it completed, in order. A prefix
   * announcing more than `max` bytes sets {@link FrameReader.error} at once,
   * without waiting for those bytes: the frames before it are returned, and
   * nothing more is read (the stream cannot be resynchronised).
   */
  push(chunk: Uint8Array): Uint8Array[] {
    if (this.failed !== undefined) return [];
    this.append(chunk);
    const frames: Uint8Array[] = [];
    for (;;) {
      const available = this.end - this.start;
      if (available < HEADER_LEN) break;
      const view = new DataView(this.buf.buffer, this.buf.byteOffset + this.start, HEADER_LEN);
      const length = view.getUint32(0, false);
      if (length > this.max) {
        this.failed = new FrameTooLargeError(length, this.max);
        this.buf = new Uint8Array(0);
        this.start = 0;
        this.end = 0;
        return frames;
      }
      if (available < HEADER_LEN + length) break;
      const from = this.start + HEADER_LEN;
      frames.push(this.buf.slice(from, from + length));
      this.start = from + length;
    }
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
    }
    return frames;
  }

  private append(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    const held = this.end - this.start;
    if (this.end + chunk.length > this.buf.length) {
      // Room at the front is reused before the buffer grows.
      const need = held + chunk.length;
      const next = need <= this.buf.length ? this.buf : new Uint8Array(Math.max(need, this.buf.length * 2, 64));
      if (next === this.buf) this.buf.copyWithin(0, this.start, this.end);
      else next.set(this.buf.subarray(this.start, this.end), 0);
      this.buf = next;
      this.start = 0;
      this.end = held;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }
}
