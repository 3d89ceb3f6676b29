// The messaging client: one WebSocket to the gateway, kept open across network cuts and
// server restarts, with every acknowledged message delivered to the application exactly
// once and in order (docs/protocol.md sections 1, 4 and 6).
import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { decodeFrame, encodeFrame, subprotocol, type Encoding } from "./codec.js";
import { Emitter } from "./emitter.js";
import { PreauError, retryable } from "./errors.js";
import type {
  Ack,
  ChannelId,
  ChannelInfo,
  ClientFrame,
  Entry,
  MemberInfo,
  ProfileInfo,
  Receipt,
  ReportInfo,
  ServerFrame,
  SuspensionInfo,
} from "./protocol.js";
import { ChannelBook, type ChannelState, type Taken } from "./channels.js";
import { TypingTracker } from "./typing.js";
import { uuidv7 } from "./uuid.js";

/** A command as sent, without its request id. */
export type Command = ClientFrame extends infer F ? (F extends { id: number } ? Omit<F, "id"> : never) : never;
/** The command of a given `type`. */
export type CommandOf<T extends Command["type"]> = Extract<Command, { type: T }>;
/** The `hello` frame. */
export type Hello = Extract<ServerFrame, { type: "hello" }>;
/** A school alert (to its direction). */
export type Alert = Extract<ServerFrame, { type: "alert" }>;

/** The minimum of the browser's WebSocket the client uses (the `ws` package's fits too). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly protocol: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
/** A WebSocket constructor. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** A send waiting for its acknowledgement, as an outbox store keeps it. */
export interface OutboxItem {
  /** The command, with its `client_id` (the same on every retry). */
  command: CommandOf<"send"> | CommandOf<"create_thread"> | CommandOf<"create_group">;
  /** When it was first queued, ms since the epoch. */
  queuedAt: number;
}

/** Where the outbox survives a page reload (for example `localStorage`); optional. */
export interface OutboxStore {
  load(): OutboxItem[] | Promise<OutboxItem[]>;
  save(items: OutboxItem[]): void | Promise<void>;
}

/** Settings of a client. */
export interface ClientOptions {
  /** The gateway's WebSocket address, e.g. `wss://ent.example/preau/ws`. */
  url: string;
  /** The user's token, or a function giving a fresh one (called again after close 4001). */
  token: string | (() => string | Promise<string>);
  /** Frames' encoding (default `msgpack`). */
  encoding?: Encoding;
  /** WebSocket implementation (default `globalThis.WebSocket`; in Node, the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** Positions saved by a previous run (last seq seen per channel): `sync` returns what
   * was missed since. */
  positions?: Record<ChannelId, number>;
  /** Keeps unacknowledged sends across reloads. */
  outbox?: OutboxStore;
  /** Reconnect backoff. */
  backoff?: BackoffOptions;
  /** How long a command may wait for its answer before the connection is taken as dead
   * (default 20 s). */
  requestTimeoutMs?: number;
  /** After this long without a frame from the server (default 25 s), a `ping`, to notice
   * a dead connection that the browser does not report. */
  pingIntervalMs?: number;
  /** Random numbers for jitter (tests). */
  random?: () => number;
}

/** Connection state, for a status line. */
export type Status = "connecting" | "online" | "reconnecting" | "stopped";

/** Why the client stopped for good. */
export type StopReason = "closed" | "removed" | "unauthorized";

export type { ChannelState };

/** Events a client emits. */
export interface ClientEvents {
  /** The connection state changed; `retryInMs` when reconnecting. */
  status: (status: Status, detail: { code?: number; reason?: string; retryInMs?: number }) => void;
  /** A session started (first connect and every reconnect). */
  hello: (hello: Hello) => void;
  /** An entry of a channel, in seq order, once: live (`live`) or caught up after a gap or
   * reconnect. */
  entry: (channel: ChannelId, entry: Entry, live: boolean) => void;
  /** A channel was added or its summary changed (unread, read marker, last seq). */
  channel: (state: ChannelState) => void;
  /** The user no longer sees a channel. */
  channelRemoved: (channel: ChannelId) => void;
  /** Someone marked a channel read. */
  read: (channel: ChannelId, user: string, seq: number) => void;
  /** Who types in a conversation changed. */
  typing: (channel: ChannelId, users: string[]) => void;
  /** A user came online or went offline. */
  presence: (user: string, online: boolean) => void;
  /** A suspension of messaging started, changed or ended (`null`). */
  suspension: (s: SuspensionInfo | null) => void;
  /** An alert for the school's direction. */
  alert: (alert: Alert) => void;
  /** The outbox changed (sends waiting for their acknowledgement). */
  outbox: (items: OutboxItem[]) => void;
  /** A queued send finally failed (not retryable). */
  sendFailed: (item: OutboxItem, error: PreauError) => void;
  /** Names became known (`profiles`, `members`): redraw what showed ids. */
  profiles: (profiles: ProfileInfo[]) => void;
  /** The client stopped for good (signed out, removed, or `close()`). */
  stopped: (reason: StopReason, detail: string) => void;
}

interface Pending {
  frame: Command;
  resolve: (ack: Ack) => void;
  reject: (e: PreauError) => void;
  /** Sent again after a reconnect (reads, idempotent writes) or rejected `disconnected`. */
  retry: boolean;
  sentAt: number;
}

// Commands that may be sent again after a reconnect without doing anything twice: reads,
// writes carrying a client_id, and writes that set a state.
const RETRY = new Set<Command["type"]>([
  "send",
  "create_thread",
  "create_group",
  "open_direct",
  "sync",
  "history",
  "members",
  "receipts",
  "reports",
  "mark_read",
  "set_thread",
  "mute",
  "add_members",
  "leave",
  "profiles",
]);
const TYPING_EVERY_MS = 3000;

/** A Préau messaging client. See sdk/js/README.md. */
export class PreauClient extends Emitter<ClientEvents> {
  private readonly opts: ClientOptions;
  private readonly book: ChannelBook;
  private readonly typers = new TypingTracker((channel, users) => this.emit("typing", channel, users));
  private readonly presenceOf = new Map<string, boolean>();
  private readonly known = new Map<string, ProfileInfo | null>();
  private readonly typingSent = new Map<ChannelId, number>();
  private readonly repairing = new Set<ChannelId>();
  private readonly pending = new Map<number, Pending>();
  private readonly queued: { frame: Command; p: Pending }[] = [];
  private outboxItems: OutboxItem[] = [];
  private ws: WebSocketLike | null = null;
  private nextId = 1;
  private attempt = 0;
  private failedAuth = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private reconnectAfter: number | null = null;
  private state: Status = "connecting";
  private stoppedFor: StopReason | null = null;
  private helloFrame: Hello | null = null;
  private suspensionNow: SuspensionInfo | null = null;
  private resumed = false;
  private started = false;
  private lastFrameAt = 0;

  constructor(opts: ClientOptions) {
    super();
    this.opts = opts;
    this.book = new ChannelBook(opts.positions);
  }

  // ---- state the application reads ----

  /** The current connection state. */
  get status(): Status {
    return this.state;
  }
  /** The last `hello` (the user, their profile and school, the limits). */
  get hello(): Hello | null {
    return this.helloFrame;
  }
  /** The user's id, once connected. */
  get user(): string | undefined {
    return this.helloFrame?.user;
  }
  /** The suspension of messaging in force, if any. */
  get suspension(): SuspensionInfo | null {
    return this.suspensionNow;
  }
  /** Every channel the user sees. */
  get channels(): ChannelState[] {
    return this.book.all();
  }
  /** One channel's summary. */
  channel(id: ChannelId): ChannelState | undefined {
    const state = this.book.get(id);
    return state && { ...state };
  }
  /** The last seq seen per channel: save it to resume a later run (`positions`). */
  positions(): Record<ChannelId, number> {
    return Object.fromEntries(this.book.positions().map((p) => [p.channel, p.seq]));
  }
  /** Whether a user is online, as far as this client has heard. */
  online(user: string): boolean | undefined {
    return this.presenceOf.get(user);
  }
  /** Users typing in a conversation now. */
  typingIn(channel: ChannelId): string[] {
    return this.typers.in(channel);
  }
  /** Sends waiting for their acknowledgement. */
  get outbox(): OutboxItem[] {
    return [...this.outboxItems];
  }

  // ---- lifecycle ----

  /** Connects, and resolves on the first `hello` (rejects if the client stops first).
   * The client then stays connected until `close()`. */
  async connect(): Promise<Hello> {
    if (!this.started) {
      this.started = true;
      if (this.opts.outbox) {
        this.outboxItems = [...(await this.opts.outbox.load())];
        for (const item of this.outboxItems) this.deliverOutboxed(item).catch(() => undefined);
      }
      if (typeof globalThis.addEventListener === "function") {
        // A phone back on the network reconnects now rather than at the end of its backoff.
        globalThis.addEventListener("online", this.onNetworkBack);
      }
      this.open();
    }
    if (this.helloFrame && this.state === "online") return this.helloFrame;
    return new Promise((resolve, reject) => {
      const offHello = this.on("hello", (h) => {
        offHello();
        offStop();
        resolve(h);
      });
      const offStop = this.on("stopped", (reason, detail) => {
        offHello();
        offStop();
        reject(new PreauError(reason === "unauthorized" ? "unauthorized" : "stopped", detail));
      });
    });
  }

  /** Closes for good: pending commands are rejected with `stopped` (unacknowledged sends
   * stay in the outbox store, if there is one, for the next run). */
  close(): void {
    this.stop("closed", "closed by the application");
  }

  private onNetworkBack = (): void => {
    if (this.state === "reconnecting" && this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.open();
    }
  };

  private setStatus(s: Status, detail: { code?: number; reason?: string; retryInMs?: number } = {}): void {
    this.state = s;
    this.emit("status", s, detail);
  }

  private async open(): Promise<void> {
    if (this.stoppedFor) return;
    this.setStatus(this.attempt === 0 && !this.helloFrame ? "connecting" : "reconnecting");
    let token: string;
    try {
      token = typeof this.opts.token === "string" ? this.opts.token : await this.opts.token();
    } catch (e) {
      this.scheduleReconnect(this.nextBackoff(), `token provider failed: ${String(e)}`);
      return;
    }
    if (this.stoppedFor) return;
    const Ws = this.opts.WebSocket ?? (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ws) throw new Error("no WebSocket implementation: pass `WebSocket` in the options");
    const encoding = this.opts.encoding ?? "msgpack";
    let ws: WebSocketLike;
    try {
      ws = new Ws(this.opts.url, [subprotocol(encoding)]);
    } catch (e) {
      this.scheduleReconnect(this.nextBackoff(), String(e));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.resumed = false;
    ws.onopen = () => {
      // The token travels in the first frame, never in the URL (proxies log URLs).
      ws.send(encodeFrame(encoding, { type: "auth", token }));
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastFrameAt = Date.now();
      let frame: ServerFrame;
      try {
        frame = decodeFrame(ev.data) as ServerFrame;
      } catch {
        return; // Not a frame of this protocol: nothing to do with it.
      }
      this.onFrame(frame);
    };
    ws.onerror = () => {
      // The close event follows and says what to do.
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.onClosed(ev.code, ev.reason);
    };
  }

  private send(frame: unknown): void {
    const ws = this.ws;
    if (ws && ws.readyState === 1) ws.send(encodeFrame(this.opts.encoding ?? "msgpack", frame));
  }

  private onClosed(code: number, reason: string): void {
    this.ws = null;
    this.stopPing();
    const wasResumed = this.resumed;
    this.resumed = false;
    // Commands in flight: those safe to repeat wait for the next session, the others are
    // told the connection dropped before their answer.
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      if (p.retry) this.queued.push({ frame: p.frame, p });
      else p.reject(new PreauError("disconnected", "the connection dropped before the answer"));
    }
    if (this.stoppedFor) return;
    this.typers.clearAll();
    // Offline, nobody's presence is known any more; `members` after the reconnect says.
    this.presenceOf.clear();
    if (code === 4003) return this.stop("removed", reason || "account removed");
    if (code === 4001) {
      // A fresh token from the provider; a static token cannot be renewed, and a provider
      // whose fresh tokens are refused twice in a row is not going to do better.
      this.failedAuth++;
      if (typeof this.opts.token === "string" || this.failedAuth > 2) {
        return this.stop("unauthorized", reason || "token refused");
      }
      return this.scheduleReconnect(this.failedAuth === 1 ? 0 : this.nextBackoff(), reason, code);
    }
    if (this.reconnectAfter !== null) {
      // The server said when (`reconnect` frame, then 1012): its jitter spreads the storm.
      const after = this.reconnectAfter;
      this.reconnectAfter = null;
      return this.scheduleReconnect(after, reason, code);
    }
    if (code === 4008 && wasResumed) {
      // Cut as a slow consumer: nothing is lost, resume soon (a little jitter).
      return this.scheduleReconnect(Math.floor(this.rand() * 1000), reason, code);
    }
    this.scheduleReconnect(this.nextBackoff(), reason, code);
  }

  /** Leaves the current socket for dead now: a closing handshake with a server that no
   * longer answers would take the browser half a minute. */
  private abandon(reason: string): void {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    try {
      ws.close(4000, reason);
    } catch {
      // Already closing.
    }
    this.onClosed(4000, reason);
  }

  private nextBackoff(): number {
    return backoffDelay(this.attempt++, this.rand(), this.opts.backoff);
  }

  private rand(): number {
    return (this.opts.random ?? Math.random)();
  }

  private scheduleReconnect(ms: number, reason: string, code?: number): void {
    if (this.stoppedFor) return;
    this.setStatus("reconnecting", { code, reason, retryInMs: ms });
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.open();
    }, ms);
  }

  private stop(reason: StopReason, detail: string): void {
    if (this.stoppedFor) return;
    this.stoppedFor = reason;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.stopPing();
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this.onNetworkBack);
    }
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= 1) ws.close(1000, "client closed");
    const err = new PreauError(reason === "unauthorized" ? "unauthorized" : "stopped", detail);
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(err);
    }
    for (const { p } of this.queued.splice(0)) p.reject(err);
    this.setStatus("stopped", { reason: detail });
    this.emit("stopped", reason, detail);
  }

  // ---- frames ----

  private onFrame(f: ServerFrame): void {
    switch (f.type) {
      case "hello":
        return void this.onHello(f);
      case "ack":
      case "error": {
        const id = f.id;
        if (id === undefined || id === null) return;
        const p = this.pending.get(id);
        if (!p) return;
        this.pending.delete(id);
        if (f.type === "ack") p.resolve(f);
        else p.reject(new PreauError(f.code, f.message, f.retry_after_ms ?? undefined));
        // Suspensions are learnt from `sync`: a refusal says one started, so ask now and
        // the page can say why (the `suspension` event).
        if (f.type === "error" && f.code === "suspended" && this.resumed) void this.resync().catch(() => undefined);
        return;
      }
      case "event":
        return this.takeEntries(f.channel, [f.entry], true);
      case "read":
        return this.onRead(f.channel, f.user, f.seq);
      case "typing":
        if (f.user !== this.user) this.typers.typing(f.channel, f.user);
        return;
      case "presence":
        this.presenceOf.set(f.user, f.online);
        return this.emit("presence", f.user, f.online);
      case "channel_added":
        return this.upsert(f.info);
      case "channel_removed":
        return this.removeChannel(f.channel);
      case "reconnect":
        this.reconnectAfter = f.after_ms;
        return;
      case "alert":
        return this.emit("alert", f);
    }
  }

  private async onHello(h: Hello): Promise<void> {
    this.helloFrame = h;
    this.attempt = 0;
    this.failedAuth = 0;
    this.setSuspension(h.suspension ?? null);
    this.setStatus("online");
    this.startPing();
    const ws = this.ws;
    try {
      await this.resync();
    } catch (e) {
      // The session ended under the sync; the next one syncs again.
      if (this.ws === ws && ws) this.abandon("resume failed");
      return;
    }
    if (this.ws !== ws) return;
    this.resumed = true;
    // Queued commands (outbox first, in order) go out once the session caught up.
    for (const { frame, p } of this.queued.splice(0)) this.transmit(frame, p);
    this.emit("hello", h);
  }

  /** `sync` with the positions held, then pages of `history` for channels with more. */
  private async resync(): Promise<void> {
    const ack = await this.rawRequest({ type: "sync", positions: this.book.positions() });
    this.setSuspension(ack.suspension ?? null);
    const seen = new Set<ChannelId>();
    for (const info of ack.channels) {
      seen.add(info.channel);
      this.upsert(info);
    }
    for (const ch of ack.removed) this.removeChannel(ch);
    for (const ch of this.book.ids()) if (!seen.has(ch)) this.removeChannel(ch);
    for (const info of ack.channels) {
      if (info.more || this.book.missing(info.channel)) await this.repair(info.channel);
    }
  }

  private upsert(info: ChannelInfo): void {
    const { state, taken } = this.book.upsert(info);
    this.deliver(info.channel, taken, false);
    this.emit("channel", state);
  }

  private removeChannel(channel: ChannelId): void {
    this.typers.clear(channel);
    if (this.book.remove(channel)) this.emit("channelRemoved", channel);
  }

  private takeEntries(channel: ChannelId, entries: Entry[], live: boolean): void {
    const taken = this.book.take(channel, entries, this.user);
    this.deliver(channel, taken, live);
    if (taken.gap) void this.repair(channel).catch(() => undefined);
  }

  private deliver(channel: ChannelId, taken: Taken, live: boolean): void {
    for (const e of taken.delivered) {
      if (live && e.author) this.typers.stopped(channel, e.author);
      this.emit("entry", channel, e, live);
    }
    if (taken.changed) this.emit("channel", taken.changed);
  }

  /** Fetches what a channel misses after its last seq, page after page. */
  private async repair(channel: ChannelId): Promise<void> {
    if (this.repairing.has(channel)) return;
    this.repairing.add(channel);
    try {
      for (;;) {
        const after = this.book.last(channel);
        if (after === undefined) return;
        const ack = await this.rawRequest({ type: "history", channel, after, limit: 200 });
        this.deliver(channel, this.book.take(channel, ack.entries, this.user), false);
        if (!ack.more && !this.book.missing(channel)) return;
        if (!ack.entries.length && !ack.more) return; // Nothing more to read: the marker is ahead.
      }
    } finally {
      this.repairing.delete(channel);
    }
  }

  private onRead(channel: ChannelId, user: string, seq: number): void {
    const changed = user === this.user ? this.book.read(channel, seq) : null;
    if (changed) this.emit("channel", changed);
    this.emit("read", channel, user, seq);
  }

  private setSuspension(s: SuspensionInfo | null): void {
    const before = JSON.stringify(this.suspensionNow);
    this.suspensionNow = s;
    if (before !== JSON.stringify(s)) this.emit("suspension", s);
  }

  private startPing(): void {
    this.stopPing();
    const idle = this.opts.pingIntervalMs ?? 25_000;
    const timeout = this.opts.requestTimeoutMs ?? 20_000;
    this.pingTimer = setInterval(() => {
      const now = Date.now();
      // A command unanswered for too long means a dead connection the browser has not
      // noticed (a phone changing networks): close it and reconnect.
      for (const p of this.pending.values()) {
        if (now - p.sentAt > timeout) {
          this.abandon("request timeout");
          return;
        }
      }
      // Quiet for a while: one ping, whose answer (or its absence) tells.
      if (this.pending.size === 0 && now - this.lastFrameAt > idle) this.rawRequest({ type: "ping" }).catch(() => undefined);
    }, Math.min(5_000, idle));
  }

  private stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  // ---- commands ----

  /** Sends a command now (during resume too), bypassing the queue. */
  private rawRequest(frame: Command): Promise<Ack> {
    return new Promise((resolve, reject) => {
      this.transmit(frame, { frame, resolve, reject, retry: false, sentAt: Date.now() });
    });
  }

  private transmit(frame: Command, p: Pending): void {
    if (!this.ws || this.ws.readyState !== 1) {
      if (p.retry) this.queued.push({ frame, p });
      else p.reject(new PreauError("disconnected", "not connected"));
      return;
    }
    const id = this.nextId++;
    p.sentAt = Date.now();
    this.pending.set(id, p);
    this.send({ id, ...frame });
  }

  /** Sends any command and resolves with its `ack` (rejects with a [`PreauError`]). While
   * the client is reconnecting, commands safe to repeat wait for the next session; the
   * others are refused with `disconnected`. */
  request(frame: Command): Promise<Ack> {
    if (this.stoppedFor) return Promise.reject(new PreauError("stopped", "the client is stopped"));
    const retry = RETRY.has(frame.type);
    return new Promise<Ack>((resolve, reject) => {
      const p: Pending = { frame, resolve, reject, retry, sentAt: Date.now() };
      if (this.resumed) this.transmit(frame, p);
      else if (retry) this.queued.push({ frame, p });
      else reject(new PreauError("disconnected", "not connected"));
    });
  }

  /** Queues an idempotent write in the outbox (see [`deliverOutboxed`]). */
  private enqueue(command: OutboxItem["command"]): Promise<Ack> {
    const item: OutboxItem = { command, queuedAt: Date.now() };
    this.outboxItems.push(item);
    this.persistOutbox();
    return this.deliverOutboxed(item);
  }

  /** Sends an outbox item now or after the next reconnect, again (same `client_id`)
   * until acknowledged or refused for good. */
  private deliverOutboxed(item: OutboxItem): Promise<Ack> {
    const attempt = (): Promise<Ack> =>
      this.request(item.command).catch((e: PreauError) => {
        if (e.code !== "stopped" && retryable(e.code)) {
          const wait = e.retryAfterMs ?? backoffDelay(1, this.rand(), this.opts.backoff);
          return new Promise<Ack>((r) => setTimeout(r, wait)).then(attempt);
        }
        throw e;
      });
    return attempt().then(
      (ack) => {
        this.dropFromOutbox(item);
        return ack;
      },
      (e: PreauError) => {
        // Stopped: the item stays in the store for the next run. Refused: it is gone.
        if (e.code !== "stopped" && e.code !== "unauthorized") {
          this.dropFromOutbox(item);
          this.emit("sendFailed", item, e);
        }
        throw e;
      },
    );
  }

  private dropFromOutbox(item: OutboxItem): void {
    const i = this.outboxItems.indexOf(item);
    if (i >= 0) {
      this.outboxItems.splice(i, 1);
      this.persistOutbox();
    }
  }

  private persistOutbox(): void {
    this.emit("outbox", this.outbox);
    void Promise.resolve(this.opts.outbox?.save(this.outbox)).catch(() => undefined);
  }

  /** Posts a message; resolves with its seq once stored (`duplicate` if it was a retry
   * of one already stored). In a forum, `thread` is required. */
  async sendMessage(
    channel: ChannelId,
    body: string,
    opts: { thread?: number; replyTo?: number; clientId?: string } = {},
  ): Promise<{ seq: number; duplicate: boolean; clientId: string }> {
    const client_id = opts.clientId ?? uuidv7();
    const ack = await this.enqueue({ type: "send", channel, client_id, body, thread: opts.thread, reply_to: opts.replyTo });
    return { seq: ack.seq ?? 0, duplicate: ack.duplicate, clientId: client_id };
  }

  /** Opens a forum thread (teachers and staff); resolves with its seq, the thread's id. */
  async createThread(channel: ChannelId, title: string, body: string): Promise<number> {
    const ack = await this.enqueue({ type: "create_thread", channel, client_id: uuidv7(), title, body });
    return ack.seq ?? 0;
  }

  /** Creates a group conversation; resolves with its channel. */
  async createGroup(name: string, members: string[]): Promise<ChannelId> {
    const ack = await this.enqueue({ type: "create_group", client_id: uuidv7(), name, members });
    return ack.channel ?? "";
  }

  /** Opens (or finds) the direct conversation with a user. */
  async openDirect(user: string): Promise<ChannelId> {
    const ack = await this.request({ type: "open_direct", user });
    return ack.channel ?? "";
  }

  /** Replaces a message's text (its author). */
  async edit(channel: ChannelId, seq: number, body: string): Promise<number> {
    return (await this.request({ type: "edit", channel, seq, body })).seq ?? 0;
  }

  /** Deletes a message (its author or a moderator). */
  async delete(channel: ChannelId, seq: number): Promise<number> {
    return (await this.request({ type: "delete", channel, seq })).seq ?? 0;
  }

  /** Locks or pins a thread (moderators). */
  async setThread(channel: ChannelId, thread: number, state: { locked?: boolean; pinned?: boolean }): Promise<void> {
    await this.request({ type: "set_thread", channel, thread, locked: state.locked, pinned: state.pinned });
  }

  /** Keeps a pupil from posting in a forum for some minutes; 0 lifts it (moderators). */
  async mute(channel: ChannelId, user: string, minutes: number): Promise<void> {
    await this.request({ type: "mute", channel, user, minutes });
  }

  /** Adds members to a group (its creator). */
  async addMembers(channel: ChannelId, members: string[]): Promise<void> {
    await this.request({ type: "add_members", channel, members });
  }

  /** Leaves a group. */
  async leave(channel: ChannelId): Promise<void> {
    await this.request({ type: "leave", channel });
  }

  /** A page of a channel's log: `before` a seq to scroll back (newest page last), or
   * `after` one. Entries also pass through the sequencer when they fill a gap. */
  async history(channel: ChannelId, opts: { before?: number; after?: number; limit?: number } = {}): Promise<{ entries: Entry[]; more: boolean }> {
    const ack = await this.request({ type: "history", channel, before: opts.before, after: opts.after, limit: opts.limit });
    return { entries: ack.entries, more: ack.more };
  }

  /** Marks a channel read up to `seq` (default: everything received). */
  async markRead(channel: ChannelId, seq?: number): Promise<void> {
    const upTo = seq ?? this.book.last(channel) ?? this.book.get(channel)?.lastSeq ?? 0;
    const changed = this.book.read(channel, upTo);
    if (changed) this.emit("channel", changed);
    if (upTo > 0) await this.request({ type: "mark_read", channel, seq: upTo });
  }

  /** Who has read an entry (its author and moderators). */
  async receipts(channel: ChannelId, seq: number): Promise<Receipt[]> {
    return (await this.request({ type: "receipts", channel, seq })).receipts;
  }

  /** Members of a conversation, with whether they are online. */
  async members(channel: ChannelId): Promise<MemberInfo[]> {
    const members = (await this.request({ type: "members", channel })).members;
    for (const m of members) {
      this.presenceOf.set(m.user, m.online);
      this.known.set(m.user, { user: m.user, name: m.name, profile: m.profile });
    }
    this.emit("profiles", members.map((m) => ({ user: m.user, name: m.name, profile: m.profile })));
    return members;
  }

  /** Names and profiles of users (those the school's rules let the user know of; others
   * are left out). Cached: only ids not asked before go to the server. */
  async profiles(users: string[]): Promise<ProfileInfo[]> {
    const missing = [...new Set(users)].filter((u) => !this.known.has(u) && !u.startsWith("school:"));
    for (let i = 0; i < missing.length; i += 200) {
      const chunk = missing.slice(i, i + 200);
      const got = (await this.request({ type: "profiles", users: chunk })).profiles;
      for (const u of chunk) this.known.set(u, null);
      for (const p of got) this.known.set(p.user, p);
      if (got.length) this.emit("profiles", got);
    }
    return users.map((u) => this.known.get(u)).filter((p): p is ProfileInfo => !!p);
  }

  /** A user's display name if known (see `profiles`), else undefined. */
  nameOf(user: string): string | undefined {
    return this.known.get(user)?.name ?? undefined;
  }

  /** Says the user is typing (at most once every 3 s per conversation; not stored). */
  typing(channel: ChannelId): void {
    const now = Date.now();
    if (now - (this.typingSent.get(channel) ?? 0) < TYPING_EVERY_MS || !this.resumed) return;
    this.typingSent.set(channel, now);
    this.request({ type: "typing", channel }).catch(() => undefined);
  }

  /** Reports a message to the school's moderators. */
  async report(channel: ChannelId, seq: number, reason: string): Promise<string> {
    return (await this.request({ type: "report", channel, seq, reason })).report ?? "";
  }

  /** The moderation queue. */
  async reports(): Promise<ReportInfo[]> {
    return (await this.request({ type: "reports" })).reports;
  }

  /** Closes a report: `delete` removes the message, `dismiss` keeps it. */
  async closeReport(report: string, action: "delete" | "dismiss"): Promise<void> {
    await this.request({ type: "close_report", report, action });
  }
}
