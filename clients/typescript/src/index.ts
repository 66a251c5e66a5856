// @signalbox/client: a client for signalbox servers (docs/PROTOCOL.md).

export {
  Client,
  type AnyMessages,
  type ClientOptions,
  type ClientStats,
  type ConnectedContext,
  type ConnectionState,
  type MessageMap,
  type PayloadArg,
  type ReceiveType,
  type ReplyOf,
  type RequestOptions,
  type RequestType,
  type SendType,
} from "./client.js";
export { type TransportName, type WebSocketConstructor, type WebSocketLike, type SocketEvent } from "./link.js";
export {
  TransportChoice,
  closeCodeOf,
  type WebTransportCloseInfoLike,
  type WebTransportConstructor,
  type WebTransportHash,
  type WebTransportInit,
  type WebTransportLike,
  type WebTransportOptions,
  type WebTransportStreamLike,
} from "./webtransport.js";
export { FrameReader, FrameTooLargeError, encodeFrame } from "./framing.js";
export {
  CODECS,
  COMPRESSED,
  DecodeError,
  codecByName,
  compress,
  decompress,
  type CodecName,
  type Envelope,
  type Frame,
  type Meta,
  type WireCodec,
} from "./codec.js";
export {
  AbortedError,
  ClosedError,
  DisconnectedError,
  MessageError,
  QueueFullError,
  RpcError,
  ServerError,
  SignalboxError,
  TimeoutError,
  UnexpectedReplyError,
  type ErrorCode,
  type ErrorPayload,
} from "./errors.js";
export { type OfflinePolicy } from "./offline.js";
export { type Position, type Recovery } from "./positions.js";
export { type PresenceEvent, type PresenceMember } from "./presence.js";
