// Live-class signalling helpers (docs/protocol.md section 9): the room ticket from the
// gateway, the SFU's WebSocket with typed commands and events, and the simulcast recipe
// a camera's size calls for. Media stays the browser's (RTCPeerConnection).
import { Emitter } from "./emitter.js";
import type { Candidate, ClientMsg, Event as RoomEvent, Media, Pc, Quality, ReceiveMode, ServerMsg, SignalCode } from "./live-protocol.js";
import type { WebSocketConstructor, WebSocketLike } from "./client.js";
import type { Entry, RecordingInfo } from "./protocol.js";

/** What `POST /rooms/{class}/token` gives. */
export interface RoomTicket {
  /** Room token for the SFU's `join` (a few minutes). */
  token: string;
  /** `class:<class>`. */
  room: string;
  /** `host`, `participant` or `observer`. */
  role: "host" | "participant" | "observer";
  /** The SFU node's WebSocket address. */
  sfu: string;
  /** Seconds the token stays valid. */
  expires_in: number;
}

/** An HTTP refusal from the gateway: its stable code and plain message. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/** Asks the gateway (its `https://` base address) for a ticket to a class's live session.
 * Teachers of the class get `host`, its pupils `participant`, staff `observer`; others
 * `forbidden`. */
export async function roomToken(gateway: string, userToken: string, classId: string, fetchImpl: typeof fetch = fetch): Promise<RoomTicket> {
  const res = await fetchImpl(`${gateway.replace(/\/$/, "")}/rooms/${encodeURIComponent(classId)}/token`, {
    method: "POST",
    headers: { authorization: `Bearer ${userToken}` },
  });
  const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) throw new HttpError(res.status, String(body.code ?? "http_error"), String(body.message ?? res.statusText));
  return body as unknown as RoomTicket;
}

/** What `POST /recordings/link` gives: the recording's address with a token, valid a few
 * minutes (ask again for a later download). */
export interface RecordingLink {
  url: string;
  /** Seconds the link stays valid. */
  expires_in: number;
}

/** The recording a `recording` entry of a class's announcements lists, or `null` for any
 * other entry (or one deleted, or emptied by the retention). */
export function recordingOf(entry: Entry): RecordingInfo | null {
  if (entry.kind !== "recording" || entry.deleted || !entry.body) return null;
  try {
    const v = JSON.parse(entry.body) as RecordingInfo;
    return typeof v.id === "string" && typeof v.url === "string" ? v : null;
  } catch {
    return null;
  }
}

/** Asks the gateway for a download link to the recording listed at `seq` of a class's
 * announcements. Whoever reads the announcements gets one; others `forbidden`; a
 * recording deleted or past its retention `not_found`. */
export async function recordingLink(gateway: string, userToken: string, channel: string, seq: number, fetchImpl: typeof fetch = fetch): Promise<RecordingLink> {
  const res = await fetchImpl(`${gateway.replace(/\/$/, "")}/recordings/link`, {
    method: "POST",
    headers: { authorization: `Bearer ${userToken}`, "content-type": "application/json" },
    body: JSON.stringify({ channel, seq }),
  });
  const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) throw new HttpError(res.status, String(body.code ?? "http_error"), String(body.message ?? res.statusText));
  return body as unknown as RecordingLink;
}

/** An encoding of a simulcast stream, as `RTCRtpEncodingParameters`. */
export interface SimulcastEncoding {
  rid: "q" | "h" | "f";
  scaleResolutionDownBy?: number;
  maxBitrate: number;
}

/** The simulcast layers to send for a camera of `width`×`height`: three from 960×540 up
 * (quarter, half, full), two from 480×270, and `null` (one stream) for a smaller camera.
 * The SFU picks each pupil's layer from these rids (`q`, `h`, `f`). */
export function simulcastRecipe(width: number, height: number): SimulcastEncoding[] | null {
  const pixels = width * height;
  if (pixels >= 960 * 540) {
    return [
      { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
      { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
      { rid: "f", maxBitrate: 1_500_000 },
    ];
  }
  if (pixels >= 480 * 270) {
    return [
      { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 300_000 },
      { rid: "f", maxBitrate: 900_000 },
    ];
  }
  return null;
}

/** A live command without its request id. */
export type LiveCommand = ClientMsg extends infer F ? (F extends unknown ? Omit<F, "id"> : never) : never;

/** A refused live command. */
export class LiveError extends Error {
  constructor(
    readonly code: SignalCode,
    message: string,
  ) {
    super(message);
    this.name = "LiveError";
  }
}

/** Events of a live session: every server frame by its `type`, plus `closed`. */
export type LiveEvents = {
  [K in (ServerMsg | RoomEvent)["type"]]: (frame: Extract<ServerMsg | RoomEvent, { type: K }>) => void;
} & {
  /** The SFU closed the session: 4003 turned away (reason says why), 4009 ask the gateway
   * again (`elsewhere`), 4001 the room token expired, 1000 the class ended. */
  closed: (code: number, reason: string) => void;
};

/** The SFU's signalling WebSocket for one member. */
export class LiveSession extends Emitter<LiveEvents> {
  private ws: WebSocketLike | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: LiveError) => void }>();

  constructor(
    private readonly ticket: Pick<RoomTicket, "sfu" | "token">,
    private readonly WebSocketImpl?: WebSocketConstructor,
  ) {
    super();
  }

  /** Opens the socket and joins with the room token; resolves with `welcome`. */
  join(): Promise<Extract<ServerMsg, { type: "welcome" }>> {
    const Ws = this.WebSocketImpl ?? (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ws) throw new Error("no WebSocket implementation");
    const ws = new Ws(this.ticket.sfu);
    this.ws = ws;
    return new Promise((resolve, reject) => {
      ws.onopen = () => ws.send(JSON.stringify({ type: "join", token: this.ticket.token }));
      ws.onmessage = (ev) => {
        let f: ServerMsg | RoomEvent;
        try {
          f = JSON.parse(String(ev.data));
        } catch {
          return;
        }
        if (f.type === "welcome") resolve(f);
        if (f.type === "ack" || f.type === "error") {
          const p = f.id != null ? this.pending.get(f.id) : undefined;
          if (p && f.id != null) {
            this.pending.delete(f.id);
            if (f.type === "ack") p.resolve();
            else p.reject(new LiveError(f.code, f.message));
          } else if (f.type === "error") {
            reject(new LiveError(f.code, f.message));
          }
        }
        (this.emit as (k: string, f: unknown) => void)(f.type, f);
      };
      ws.onclose = (ev) => {
        for (const p of this.pending.values()) p.reject(new LiveError("unavailable", `closed ${ev.code} ${ev.reason}`));
        this.pending.clear();
        reject(new LiveError("unavailable", `closed ${ev.code} ${ev.reason}`));
        this.emit("closed", ev.code, ev.reason);
      };
      ws.onerror = () => undefined;
    });
  }

  /** Sends a command; resolves on its `ack`. */
  request(cmd: LiveCommand): Promise<void> {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return Promise.reject(new LiveError("not_joined", "not connected"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, ...cmd }));
    });
  }

  /** Offers what the member publishes (`pub` connection), naming each track. */
  publish(sdp: string, tracks: Record<string, Media>): Promise<void> {
    return this.request({ type: "publish", sdp, tracks });
  }
  /** Answers the SFU's offer on the `sub` connection. */
  answer(sdp: string): Promise<void> {
    return this.request({ type: "answer", sdp });
  }
  /** Trickles a browser candidate. */
  candidate(pc: Pc, candidate: Candidate): Promise<void> {
    return this.request({ type: "candidate", pc, candidate });
  }
  /** Asks for a source's layer (a thumbnail `low`, the speaker `high`). */
  quality(source: string, quality: Quality): Promise<void> {
    return this.request({ type: "quality", source, quality });
  }
  /** What this member receives: `all`, `low` or `audio`. */
  receive(mode: ReceiveMode): Promise<void> {
    return this.request({ type: "receive", mode });
  }
  /** Raises the hand (pupils). */
  raiseHand(): Promise<void> {
    return this.request({ type: "raise_hand" });
  }
  /** Leaves the class. */
  leave(): void {
    this.request({ type: "leave" }).catch(() => undefined);
    this.ws?.close(1000, "left");
  }
}
