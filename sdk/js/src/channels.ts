// What the client knows of each channel, without IO: the sequencer's positions, and each
// channel's summary (unread count, read marker, last seq) kept up to date from `sync`,
// entries and `read` events. The client feeds it and emits what it returns.
import type { ChannelId, ChannelInfo, Entry } from "./protocol.js";
import { Sequencer } from "./sequencer.js";

/** What the client knows of a channel. */
export interface ChannelState {
  channel: ChannelId;
  kind: ChannelInfo["kind"];
  title: string;
  lastSeq: number;
  readSeq: number;
  unread: number;
  canPost: boolean;
  moderator: boolean;
}

/** What taking entries did. */
export interface Taken {
  /** Entries for the application, in order, once each. */
  delivered: Entry[];
  /** The channel's summary, when it changed. */
  changed: ChannelState | null;
  /** Entries are missing: repair with `history` after `last(channel)`. */
  gap: boolean;
}

export class ChannelBook {
  private readonly seq = new Sequencer();
  private readonly states = new Map<ChannelId, ChannelState>();
  /** Per channel, the seq up to which `unread` already counts (the server's count at the
   * last `sync` or `channel_added`, then each message taken after it). */
  private readonly counted = new Map<ChannelId, number>();

  /** Positions saved by an earlier run. */
  constructor(positions: Record<ChannelId, number> = {}) {
    for (const [channel, seq] of Object.entries(positions)) this.seq.start(channel, seq);
  }

  all(): ChannelState[] {
    return [...this.states.values()];
  }

  get(channel: ChannelId): ChannelState | undefined {
    return this.states.get(channel);
  }

  ids(): ChannelId[] {
    return [...this.states.keys()];
  }

  /** The positions for `sync`. */
  positions(): { channel: ChannelId; seq: number }[] {
    return this.seq.positions();
  }

  /** The last seq delivered in a channel. */
  last(channel: ChannelId): number | undefined {
    return this.seq.last(channel);
  }

  /** Whether a channel still misses entries (behind a gap, or before its last seq). */
  missing(channel: ChannelId): boolean {
    return this.seq.gap(channel) || (this.seq.last(channel) ?? 0) < (this.states.get(channel)?.lastSeq ?? 0);
  }

  /** A channel's summary from `sync` or `channel_added`, with the entries it carries. A
   * channel seen for the first time is watched from its last seq (its past is
   * `history`'s). */
  upsert(info: ChannelInfo): { state: ChannelState; taken: Taken } {
    const state: ChannelState = {
      channel: info.channel,
      kind: info.kind,
      title: info.title,
      lastSeq: Math.max(info.last_seq, this.states.get(info.channel)?.lastSeq ?? 0),
      readSeq: info.read_seq,
      unread: info.unread,
      canPost: info.can_post,
      moderator: info.moderator,
    };
    this.states.set(info.channel, state);
    this.counted.set(info.channel, Math.max(info.last_seq, this.counted.get(info.channel) ?? 0));
    let taken: Taken = { delivered: [], changed: null, gap: false };
    if (this.seq.has(info.channel)) taken = this.take(info.channel, info.entries ?? [], undefined);
    else this.seq.start(info.channel, info.last_seq);
    return { state: { ...state }, taken };
  }

  /** Forgets a channel; whether it was known. */
  remove(channel: ChannelId): boolean {
    this.seq.forget(channel);
    this.counted.delete(channel);
    return this.states.delete(channel);
  }

  /** Entries of a channel, live or caught up: a message of someone else past the read
   * marker counts as unread unless the server's count already had it. */
  take(channel: ChannelId, entries: Entry[], me: string | undefined): Taken {
    const r = this.seq.accept(channel, entries);
    const state = this.states.get(channel);
    for (const e of r.delivered) {
      if (!state) continue;
      state.lastSeq = Math.max(state.lastSeq, e.seq);
      const counted = this.counted.get(channel) ?? 0;
      if (e.seq <= counted) continue;
      this.counted.set(channel, e.seq);
      if ((e.kind === "message" || e.kind === "thread") && e.author !== me && e.seq > state.readSeq) state.unread++;
    }
    return { delivered: r.delivered, changed: state && r.delivered.length ? { ...state } : null, gap: r.gap };
  }

  /** The user's read marker moved (here or on another of their devices). */
  read(channel: ChannelId, seq: number): ChannelState | null {
    const state = this.states.get(channel);
    if (!state || seq <= state.readSeq) return null;
    state.readSeq = seq;
    if (seq >= state.lastSeq) state.unread = 0;
    return { ...state };
  }
}
