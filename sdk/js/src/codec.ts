// The two encodings of docs/protocol.md section 1: JSON text frames, or MessagePack maps
// with field names in binary frames. One frame is encoded once, whatever the encoding.
import { decode, encode } from "@msgpack/msgpack";

/** A session's encoding. */
export type Encoding = "json" | "msgpack";

/** The WebSocket subprotocol naming an encoding. */
export function subprotocol(e: Encoding): string {
  return e === "json" ? "preau.v1.json" : "preau.v1.msgpack";
}

/** Encodes a frame for the socket. */
export function encodeFrame(e: Encoding, frame: unknown): string | Uint8Array {
  return e === "json" ? JSON.stringify(frame) : encode(frame, { ignoreUndefined: true });
}

/** Decodes a frame off the socket (text is always JSON). Throws on garbage. */
export function decodeFrame(data: unknown): unknown {
  if (typeof data === "string") return JSON.parse(data);
  if (data instanceof ArrayBuffer) return decode(new Uint8Array(data));
  if (ArrayBuffer.isView(data)) return decode(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  throw new Error("unsupported frame data");
}
