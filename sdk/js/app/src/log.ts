// A channel's log as the app shows it, without IO: messages and threads in their current
// state (edits, deletions and thread changes applied to what they target), membership
// changes kept as notices, and live entries that came while the first page was read.
import type { Entry } from "../../src/index.js";

/** Entries of a channel in their current state (edits and deletions applied). */
export interface Log {
  entries: Map<number, Entry>;
  notices: Entry[];
  loaded: boolean;
  /** Live entries that came while the first page was being read: applied after it, so
   * none falls between the page and the live stream. */
  early: Entry[];
}

/** An empty log. */
export function newLog(): Log {
  return { entries: new Map(), notices: [], loaded: false, early: [] };
}

/** The first page read: its entries, then those newer that came meanwhile (an edit or
 * deletion of a message of the page applies again harmlessly). */
export function loadPage(log: Log, entries: Entry[]): void {
  for (const e of entries) apply(log, e);
  const newest = entries.length ? entries[entries.length - 1]!.seq : 0;
  for (const e of log.early.splice(0)) if (e.seq > newest) apply(log, e);
  log.loaded = true;
}

/** A live entry: applied, or kept until the first page is read. */
export function take(log: Log, e: Entry): void {
  if (log.loaded) apply(log, e);
  else log.early.push(e);
}

/** Applies one entry. */
export function apply(log: Log, e: Entry): void {
  switch (e.kind) {
    case "message":
    case "thread":
    case "recording":
      log.entries.set(e.seq, { ...e });
      return;
    case "edit": {
      const t = e.target != null ? log.entries.get(e.target) : undefined;
      if (t) {
        t.body = e.body;
        t.edited = true;
      }
      return;
    }
    case "delete": {
      const t = e.target != null ? log.entries.get(e.target) : undefined;
      if (t) {
        t.deleted = true;
        t.body = null;
      }
      return;
    }
    case "thread_state": {
      const t = e.target != null ? log.entries.get(e.target) : undefined;
      if (t) {
        if (e.locked != null) t.locked = e.locked;
        if (e.pinned != null) t.pinned = e.pinned;
      }
      return;
    }
    case "membership":
      if (!log.notices.some((n) => n.seq === e.seq)) log.notices.push(e);
  }
}
