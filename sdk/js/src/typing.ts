// Who is typing where: a user shows as typing for a few seconds after each `typing` event
// (or until their message arrives).

const SHOWN_MS = 6000;

export class TypingTracker {
  private readonly typers = new Map<string, Map<string, ReturnType<typeof setTimeout>>>();

  /** `changed(channel, users)` is called whenever a channel's typers change. */
  constructor(private readonly changed: (channel: string, users: string[]) => void) {}

  in(channel: string): string[] {
    return [...(this.typers.get(channel)?.keys() ?? [])];
  }

  typing(channel: string, user: string): void {
    let m = this.typers.get(channel);
    if (!m) this.typers.set(channel, (m = new Map()));
    const old = m.get(user);
    if (old) clearTimeout(old);
    m.set(user, setTimeout(() => this.stopped(channel, user), SHOWN_MS));
    this.changed(channel, this.in(channel));
  }

  /** The user stopped (their message came, or the time passed). */
  stopped(channel: string, user: string): void {
    const m = this.typers.get(channel);
    const t = m?.get(user);
    if (!m || t === undefined) return;
    clearTimeout(t);
    m.delete(user);
    this.changed(channel, this.in(channel));
  }

  /** Nobody types in `channel` any more (left, or the connection dropped). */
  clear(channel: string): void {
    const m = this.typers.get(channel);
    if (!m) return;
    for (const t of m.values()) clearTimeout(t);
    this.typers.delete(channel);
    this.changed(channel, []);
  }

  clearAll(): void {
    for (const channel of [...this.typers.keys()]) this.clear(channel);
  }
}
