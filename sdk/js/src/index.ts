// @preau/client: the Préau client for ENT front ends. See README.md.
export { PreauClient } from "./client.js";
export type {
  Alert,
  ChannelState,
  ClientEvents,
  ClientOptions,
  Command,
  CommandOf,
  Hello,
  OutboxItem,
  OutboxStore,
  Status,
  StopReason,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { PreauError, frenchMessage, retryable } from "./errors.js";
export type { ClientErrorCode } from "./errors.js";
export { Sequencer } from "./sequencer.js";
export { backoffDelay } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { uuidv7 } from "./uuid.js";
export type { Encoding } from "./codec.js";
export { HttpError, LiveError, LiveSession, recordingLink, recordingOf, roomToken, simulcastRecipe } from "./live.js";
export type { LiveCommand, LiveEvents, RecordingLink, RoomTicket, SimulcastEncoding } from "./live.js";
export type * from "./protocol.js";
export type * as Live from "./live-protocol.js";
