// The SDK's IO-free parts: sequence tracking, backoff, client ids, the simulcast recipe,
// the French messages.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { PreauClient, Sequencer, backoffDelay, frenchMessage, recordingOf, simulcastRecipe, uuidv7, type ChannelInfo, type Entry } from "../src/index.js";
import { ChannelBook } from "../src/channels.js";

const e = (seq: number): Entry => ({ seq, kind: "message", author: "u", at: 0, body: `m${seq}` }) as Entry;

describe("Sequencer", () => {
  it("delivers in order once, holds entries behind a gap and reports it", () => {
    const s = new Sequencer();
    s.start("grp:a", 2);
    expect(s.accept("grp:a", [e(1), e(2)]).delivered).toEqual([]);
    const r = s.accept("grp:a", [e(5), e(3)]);
    expect(r.delivered.map((x) => x.seq)).toEqual([3]);
    expect(r.gap).toBe(true);
    const r2 = s.accept("grp:a", [e(4), e(5), e(3)]);
    expect(r2.delivered.map((x) => x.seq)).toEqual([4, 5]);
    expect(r2.duplicates).toBe(2);
    expect(r2.gap).toBe(false);
    expect(s.positions()).toEqual([{ channel: "grp:a", seq: 5 }]);
  });

  it("starts an unknown channel at its first entry and never moves back", () => {
    const s = new Sequencer();
    expect(s.accept("grp:b", [e(7)]).delivered.map((x) => x.seq)).toEqual([7]);
    s.start("grp:b", 3);
    expect(s.last("grp:b")).toBe(7);
    s.start("grp:b", 9);
    expect(s.accept("grp:b", [e(8), e(10)]).delivered.map((x) => x.seq)).toEqual([10]);
  });
});

describe("backoff", () => {
  it("grows exponentially to its cap with full jitter", () => {
    expect(backoffDelay(0, 0.999, { baseMs: 500, maxMs: 30_000 })).toBe(499);
    expect(backoffDelay(3, 0.999, { baseMs: 500, maxMs: 30_000 })).toBe(3996);
    expect(backoffDelay(30, 0.999, { baseMs: 500, maxMs: 30_000 })).toBe(29_970);
    expect(backoffDelay(5, 0)).toBe(100);
  });
});

describe("uuidv7", () => {
  it("is a version 7 UUID that sorts by time", () => {
    const a = uuidv7(1_700_000_000_000);
    const b = uuidv7(1_700_000_000_001);
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(a < b).toBe(true);
    expect(a.slice(0, 13).replace("-", "")).toBe((1_700_000_000_000).toString(16).padStart(12, "0"));
  });
});

describe("simulcastRecipe", () => {
  it("sends three layers from 960x540, two from 480x270, one below", () => {
    expect(simulcastRecipe(1280, 720)!.map((l) => l.rid)).toEqual(["q", "h", "f"]);
    expect(simulcastRecipe(640, 480)!.map((l) => l.rid)).toEqual(["h", "f"]);
    expect(simulcastRecipe(320, 240)).toBeNull();
  });
});

describe("frenchMessage", () => {
  it("has French for every server code and a fallback", () => {
    expect(frenchMessage("locked")).toBe("Cette discussion est verrouillée.");
    expect(frenchMessage("a_code_from_a_newer_server")).toBe("Une erreur est survenue.");
    const schema = JSON.parse(readFileSync(new URL("../../../docs/schema/messaging.schema.json", import.meta.url), "utf8"));
    const codes: string[] = schema.$defs.ErrorCode.oneOf.map((c: { const: string }) => c.const);
    expect(codes.length).toBeGreaterThan(10);
    for (const code of codes) expect(frenchMessage(code), code).not.toBe("Une erreur est survenue.");
  });
});

describe("README", () => {
  it("shows the example that is type-checked (test/example.ts), in under 30 lines", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
    const code = /## Example\n\n```ts\n([\s\S]*?)```/.exec(readme)![1]!;
    const checked = readFileSync(new URL("./example.ts", import.meta.url), "utf8").split("\n").slice(2).join("\n");
    expect(checked).toBe(code.replace('from "@preau/client"', 'from "../src/index.js"'));
    expect(code.trim().split("\n").length).toBeLessThan(30);
  });
});

describe("ChannelBook", () => {
  const info = (last: number, read: number, unread: number) =>
    ({ channel: "grp:a", kind: "group", title: "A", last_seq: last, read_seq: read, unread, can_post: true, moderator: false, entries: [], more: false }) as ChannelInfo;
  const msg = (seq: number, author: string): Entry => ({ seq, kind: "message", author, at: 0, body: "x" }) as Entry;

  it("counts others' messages past the marker once, not one's own nor what the server counted", () => {
    const book = new ChannelBook();
    book.upsert(info(4, 2, 2)); // The server counted 3 and 4.
    expect(book.take("grp:a", [msg(3, "b"), msg(4, "b")], "me").changed).toBeNull(); // Seen already.
    expect(book.take("grp:a", [msg(5, "b")], "me").changed!.unread).toBe(3);
    expect(book.take("grp:a", [msg(6, "me")], "me").changed!.unread).toBe(3);
    expect(book.take("grp:a", [msg(8, "b")], "me")).toMatchObject({ gap: true, changed: null });
    // 7 fills the gap (from history): 7 and the held 8 both count.
    expect(book.take("grp:a", [msg(7, "b")], "me").changed).toMatchObject({ unread: 5, lastSeq: 8 });
    expect(book.read("grp:a", 8)).toMatchObject({ readSeq: 8, unread: 0 });
    expect(book.read("grp:a", 3)).toBeNull();
    expect(book.missing("grp:a")).toBe(false);
  });

  it("resumes from saved positions and says what a channel misses", () => {
    const book = new ChannelBook({ "grp:a": 2 });
    const { taken } = book.upsert({ ...info(5, 0, 3), entries: [msg(3, "b")] });
    expect(book.get("grp:a")!.unread).toBe(3); // The server's count: 3 is not counted twice.
    expect(taken.delivered.map((e) => e.seq)).toEqual([3]);
    expect(book.missing("grp:a")).toBe(true);
    expect(book.positions()).toEqual([{ channel: "grp:a", seq: 3 }]);
    expect(book.remove("grp:a")).toBe(true);
    expect(book.positions()).toEqual([]);
  });
});

describe("PreauClient without a token", () => {
  it("backs off when the token provider fails (it retried at once, in a loop)", async () => {
    let calls = 0;
    const c = new PreauClient({
      url: "ws://127.0.0.1:9/ws",
      token: () => {
        calls++;
        throw new Error("the ENT is unreachable");
      },
      backoff: { baseMs: 200, maxMs: 400 },
    });
    c.connect().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1000));
    c.close();
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(calls).toBeLessThanOrEqual(12);
    expect(c.status).toBe("stopped");
  });
});

describe("recordingOf", () => {
  const base: Entry = { seq: 4, kind: "recording", author: "t01", at: 0 } as Entry;
  it("reads a recording entry's body, and nothing else", () => {
    const info = { id: "20261203-101500-0a1b2c3d", url: "https://sfu-1/recordings/x.webm", duration_ms: 4000, size: 9, started_at: 1 };
    expect(recordingOf({ ...base, body: JSON.stringify(info) })).toEqual(info);
    expect(recordingOf({ ...base, kind: "message", body: JSON.stringify(info) })).toBeNull();
    expect(recordingOf({ ...base, deleted: true, body: null })).toBeNull();
    expect(recordingOf({ ...base, body: "" })).toBeNull();
    expect(recordingOf({ ...base, body: "{not json" })).toBeNull();
    expect(recordingOf({ ...base, body: "{\"id\": 3}" })).toBeNull();
  });
});
