// The app's channel log (app/src/log.ts), without a browser: entries in their current
// state, and nothing lost between the first page and the live stream.
import { describe, expect, it } from "vitest";
import { loadPage, newLog, take } from "../app/src/log.js";
import type { Entry } from "../src/index.js";

const e = (seq: number, kind: Entry["kind"], extra: Partial<Entry> = {}): Entry =>
  ({ seq, kind, author: "u", at: 0, ...extra }) as Entry;

describe("the app's channel log", () => {
  it("applies edits, deletions and thread states to what they target", () => {
    const log = newLog();
    loadPage(log, [e(1, "thread", { title: "T", body: "b" }), e(2, "message", { body: "x", thread: 1 })]);
    take(log, e(3, "edit", { target: 2, body: "y" }));
    take(log, e(4, "thread_state", { target: 1, locked: true }));
    take(log, e(5, "delete", { target: 2 }));
    take(log, e(6, "membership", { members: ["a"], joined: true }));
    take(log, e(6, "membership", { members: ["a"], joined: true }));
    expect(log.entries.get(1)!.locked).toBe(true);
    expect(log.entries.get(2)).toMatchObject({ edited: true, deleted: true, body: null });
    expect(log.notices.map((n) => n.seq)).toEqual([6]);
  });

  it("keeps live entries that come while the first page is read", () => {
    const log = newLog();
    take(log, e(3, "message", { body: "during the read" }));
    take(log, e(2, "message", { body: "already in the page" }));
    loadPage(log, [e(1, "message", { body: "a" }), e(2, "message", { body: "already in the page" })]);
    expect([...log.entries.keys()].sort()).toEqual([1, 2, 3]);
    expect(log.early).toEqual([]);
  });
});
