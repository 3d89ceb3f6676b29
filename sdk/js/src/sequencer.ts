// Per-channel sequence tracking, without IO: entries go in in any order, come out once
// each, in seq order, and a gap is reported so the caller can repair it with `history`.
import type { ChannelId, Entry } from "./protocol.js";

interface Track {
  /** Last seq delivered. */
  last: number;
  /** Entries ahead of `last + 1`, waiting for the gap before them to fill. */
  pending: Map<number, Entry>;
}

/** What `accept` did. */
export interface Accepted {
  /** Entries to hand to the application, in seq order, each exactly once. */
  delivered: Entry[];
  /** Entries dropped as duplicates (seq already delivered or already pending). */
  duplicates: number;
  /** The channel still misses entries after `last` (ask `history` with `after: last`). */
  gap: boolean;
}

export class Sequencer {
  private tracks = new Map<ChannelId, Track>();

  /** Whether the channel's position is known. */
  has(channel: ChannelId): boolean {
    return this.tracks.has(channel);
  }

  /** Last seq delivered in `channel` (undefined when untracked). */
  last(channel: ChannelId): number | undefined {
    return this.tracks.get(channel)?.last;
  }

  /** Starts tracking `channel` after `seq` (entries up to it are taken as seen). A
   * tracked channel never moves back. */
  start(channel: ChannelId, seq: number): void {
    const t = this.tracks.get(channel);
    if (!t) this.tracks.set(channel, { last: seq, pending: new Map() });
    else if (seq > t.last) {
      t.last = seq;
      for (const s of [...t.pending.keys()]) if (s <= seq) t.pending.delete(s);
    }
  }

  /** Forgets a channel (the user no longer sees it). */
  forget(channel: ChannelId): void {
    this.tracks.delete(channel);
  }

  /** Every tracked channel and its last seq, for `sync` positions. */
  positions(): { channel: ChannelId; seq: number }[] {
    return [...this.tracks].map(([channel, t]) => ({ channel, seq: t.last }));
  }

  /** Takes entries of `channel` (live events, sync or history pages). An untracked
   * channel starts just before the first entry given. */
  accept(channel: ChannelId, entries: Entry[]): Accepted {
    let t = this.tracks.get(channel);
    if (!t) {
      if (!entries.length) return { delivered: [], duplicates: 0, gap: false };
      const first = Math.min(...entries.map((e) => e.seq));
      t = { last: first - 1, pending: new Map() };
      this.tracks.set(channel, t);
    }
    let duplicates = 0;
    for (const e of entries) {
      if (e.seq <= t.last || t.pending.has(e.seq)) duplicates++;
      else t.pending.set(e.seq, e);
    }
    const delivered: Entry[] = [];
    for (let next = t.pending.get(t.last + 1); next; next = t.pending.get(t.last + 1)) {
      t.pending.delete(next.seq);
      t.last = next.seq;
      delivered.push(next);
    }
    return { delivered, duplicates, gap: t.pending.size > 0 };
  }

  /** Whether entries wait behind a gap in `channel`. */
  gap(channel: ChannelId): boolean {
    return (this.tracks.get(channel)?.pending.size ?? 0) > 0;
  }
}
