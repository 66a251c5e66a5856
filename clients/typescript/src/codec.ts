// Envelopes and codecs of docs/PROTOCOL.md §1–§3: JSON and MessagePack, and
// the compressed envelope (gzip through the platform's CompressionStream).

import { Decoder, Encoder } from "@msgpack/msgpack";

/** A codec name, as offered in `Sec-WebSocket-Protocol` (docs/PROTOCOL.md §2). */
export type CodecName = "json" | "msgpack" | "json+gzip" | "msgpack+gzip";

/** Every codec name the client speaks. */
export const CODECS: readonly CodecName[] = ["json", "msgpack", "json+gzip", "msgpack+gzip"];

/**
 * An envelope's `meta` (docs/PROTOCOL.md §1): the keys the protocol
 * defines, and any extended key a server application adds.
 */
export interface Meta {
  /** Set by a requester; every reply, progress message and error about it carries it back. */
  correlationId?: string;
  /** Set by the server: milliseconds since the Unix epoch. */
  timestamp?: number;
  /** Set by the server: the connection a publication or relay came from. */
  clientId?: string;
  /** A publication on a topic with history: the topic (docs/PROTOCOL.md §8.1). */
  topic?: string;
  /** A publication on a topic with history: its offset in the epoch. */
  offset?: number;
  /** A publication on a topic with history: the epoch of its offset. */
  epoch?: string;
  /** Extended meta. */
  [key: string]: unknown;
}

/** One message on the wire (docs/PROTOCOL.md §1). */
export interface Envelope {
  /** The message type. */
  type: string;
  /** The meta, when there is one. */
  meta?: Meta;
  /** The payload, when the type has one. */
  payload?: unknown;
}

/** A frame as a WebSocket carries it: text for JSON, binary for MessagePack. */
export type Frame = string | Uint8Array;

/** The type of the compressed envelope (docs/PROTOCOL.md §3). */
export const COMPRESSED = "COMPRESSED";

/** A frame that is not an envelope in the connection's codec. */
export class DecodeError extends Error {
  /** @param message what is wrong */
  constructor(message: string) {
    super(message);
  }

  override get name(): string {
    return "DecodeError";
  }
}

/** Encodes and decodes envelopes in one codec. */
export interface WireCodec {
  /** The codec's name. */
  readonly name: CodecName;
  /** Whether frames are binary (MessagePack) rather than text (JSON). */
  readonly binary: boolean;
  /** Whether the server may send compressed envelopes (`+gzip`). */
  readonly gzip: boolean;
  /** The envelope as one frame. */
  encode(envelope: Envelope): Frame;
  /** The envelope in `frame`; throws {@link DecodeError} when it is not one. */
  decode(frame: Frame): Envelope;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

/** Checks the shape of a decoded envelope (docs/PROTOCOL.md §1). */
export function checkEnvelope(value: unknown): Envelope {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new DecodeError("an envelope is an object");
  }
  const record = value as Record<string, unknown>;
  const type = record["type"];
  if (typeof type !== "string" || type.length === 0) {
    throw new DecodeError("an envelope's type is a non-empty string");
  }
  const meta = record["meta"];
  if (meta !== undefined && meta !== null && (typeof meta !== "object" || Array.isArray(meta))) {
    throw new DecodeError("an envelope's meta is an object");
  }
  const envelope: Envelope = { type };
  if (meta !== undefined && meta !== null) {
    envelope.meta = meta as Meta;
  }
  if ("payload" in record) {
    envelope.payload = record["payload"];
  }
  return envelope;
}

class JsonCodec implements WireCodec {
  readonly binary = false;
  constructor(
    readonly name: CodecName,
    readonly gzip: boolean,
  ) {}

  encode(envelope: Envelope): Frame {
    return JSON.stringify(envelope);
  }

  decode(frame: Frame): Envelope {
    let text: string;
    try {
      text = typeof frame === "string" ? frame : textDecoder.decode(frame);
    } catch {
      throw new DecodeError("a JSON frame is UTF-8");
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new DecodeError(`not JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
    return checkEnvelope(value);
  }
}

class MsgpackCodec implements WireCodec {
  readonly binary = true;
  private readonly encoder = new Encoder({ ignoreUndefined: true });
  private readonly decoder = new Decoder();
  constructor(
    readonly name: CodecName,
    readonly gzip: boolean,
  ) {}

  encode(envelope: Envelope): Frame {
    return this.encoder.encode(envelope);
  }

  decode(frame: Frame): Envelope {
    const bytes = typeof frame === "string" ? textEncoder.encode(frame) : frame;
    let value: unknown;
    try {
      value = this.decoder.decode(bytes);
    } catch (e) {
      throw new DecodeError(`not MessagePack: ${e instanceof Error ? e.message : String(e)}`);
    }
    return checkEnvelope(value);
  }
}

/** The codec named `name`. */
export function codecByName(name: CodecName): WireCodec {
  switch (name) {
    case "json":
      return new JsonCodec(name, false);
    case "json+gzip":
      return new JsonCodec(name, true);
    case "msgpack":
      return new MsgpackCodec(name, false);
    case "msgpack+gzip":
      return new MsgpackCodec(name, true);
  }
}

/** Whether `name` is a codec this client speaks. */
export function isCodecName(name: string): name is CodecName {
  return (CODECS as readonly string[]).includes(name);
}

/** The length of a frame in bytes, as the server counts it. */
export function frameBytes(frame: Frame): number {
  return typeof frame === "string" ? textEncoder.encode(frame).length : frame.length;
}

function toBytes(frame: Frame): Uint8Array<ArrayBuffer> {
  if (typeof frame === "string") {
    return textEncoder.encode(frame);
  }
  const copy = new Uint8Array(frame.length);
  copy.set(frame);
  return copy;
}

async function readAll(
  readable: ReadableStream<Uint8Array>,
  limit: number,
): Promise<Uint8Array> {
  const reader = readable.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    total += value.length;
    if (total > limit) {
      await reader.cancel().catch(() => undefined);
      throw new DecodeError(`a compressed envelope inflates past ${limit} bytes`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

async function pipeThrough(
  input: Uint8Array<ArrayBuffer>,
  stream: CompressionStream | DecompressionStream,
  limit: number,
): Promise<Uint8Array> {
  const writer = stream.writable.getWriter();
  // Errors surface on the readable side; these only must not go unhandled.
  writer.write(input).catch(() => undefined);
  writer.close().catch(() => undefined);
  return readAll(stream.readable, limit);
}

/** gzip (RFC 1952) of `data`. */
export async function gzip(data: Frame): Promise<Uint8Array> {
  return pipeThrough(toBytes(data), new CompressionStream("gzip"), Number.MAX_SAFE_INTEGER);
}

/** The inflated `data`; throws {@link DecodeError} past `limit` bytes, before inflating more. */
export async function gunzip(data: Uint8Array, limit: number): Promise<Uint8Array> {
  try {
    return await pipeThrough(toBytes(data), new DecompressionStream("gzip"), limit);
  } catch (e) {
    if (e instanceof DecodeError) {
      throw e;
    }
    throw new DecodeError(`bad gzip data: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  const step = 0x8000;
  for (let i = 0; i < bytes.length; i += step) {
    binary += String.fromCharCode(...bytes.subarray(i, i + step));
  }
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    throw new DecodeError("a compressed envelope's data is not base64");
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    out[i] = binary.charCodeAt(i);
  }
  return out;
}

/** The compressed envelope wrapping `frame` (docs/PROTOCOL.md §3). */
export async function compress(codec: WireCodec, frame: Frame): Promise<Frame> {
  const zipped = await gzip(frame);
  return codec.encode({
    type: COMPRESSED,
    payload: { encoding: "gzip", data: codec.binary ? zipped : toBase64(zipped) },
  });
}

/** The envelope inside a compressed envelope, inflating at most `limit` bytes. */
export async function decompress(
  codec: WireCodec,
  wrapper: Envelope,
  limit: number,
): Promise<Envelope> {
  const payload = wrapper.payload;
  if (typeof payload !== "object" || payload === null) {
    throw new DecodeError("a compressed envelope has a payload");
  }
  const { encoding, data } = payload as { encoding?: unknown; data?: unknown };
  if (encoding !== "gzip") {
    throw new DecodeError(`unknown compression ${String(encoding)}`);
  }
  let zipped: Uint8Array;
  if (typeof data === "string") {
    zipped = fromBase64(data);
  } else if (data instanceof Uint8Array) {
    zipped = data;
  } else {
    throw new DecodeError("a compressed envelope's data is base64 or bin");
  }
  const inner = await gunzip(zipped, limit);
  const envelope = codec.decode(codec.binary ? inner : textDecoder.decode(inner));
  if (envelope.type === COMPRESSED) {
    throw new DecodeError("a compressed envelope wraps another");
  }
  return envelope;
}
