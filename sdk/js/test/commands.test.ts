// Every command and event of the messaging protocol, through the SDK, against the real
// gateway (development mode, the demo school).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PreauError, type Entry, type PreauClient } from "../src/index.js";
import { ANN_6A, FORUM_6A, Gateway, until } from "./gateway.js";

let gw: Gateway;
const clients: PreauClient[] = [];

beforeAll(async () => {
  gw = await Gateway.start();
});
afterAll(async () => {
  for (const c of clients) c.close();
  await gw?.stop();
});

function open(user: string, encoding: "json" | "msgpack" = "msgpack"): PreauClient {
  const c = gw.client(user, { encoding });
  clients.push(c);
  return c;
}

function collect(c: PreauClient): Map<string, Entry[]> {
  const got = new Map<string, Entry[]>();
  c.on("entry", (ch, e) => {
    const list = got.get(ch) ?? [];
    list.push(e);
    got.set(ch, list);
  });
  return got;
}

describe.each(["json", "msgpack"] as const)("over %s", (encoding) => {
  it("connects with the auth frame and syncs the channels the user sees", async () => {
    const c = open("e001", encoding);
    const hello = await c.connect();
    expect(hello.user).toBe("e001");
    expect(hello.profile).toBe("pupil");
    expect(hello.limits.max_body_bytes).toBeGreaterThan(0);
    expect(c.status).toBe("online");
    const ids = c.channels.map((ch) => ch.channel);
    expect(ids).toContain(FORUM_6A);
    expect(ids).toContain(ANN_6A);
    expect(c.channel(ANN_6A)!.canPost).toBe(false);
    c.close();
    expect(c.status).toBe("stopped");
  });
});

describe("conversations", () => {
  it("a parent writes to a teacher: send, event, duplicate retry, typing, read, presence, members", async () => {
    const parent = open("pa001");
    const teacher = open("t01", "json");
    await Promise.all([parent.connect(), teacher.connect()]);
    const seen = collect(teacher);
    const dm = await parent.openDirect("t01");
    expect(dm).toBe("dm:pa001:t01");
    await until(() => teacher.channel(dm) !== undefined, 10_000, "channel_added");

    const presence: [string, boolean][] = [];
    parent.on("presence", (u, on) => presence.push([u, on]));
    const members = await parent.members(dm);
    expect(members.map((m) => [m.user, m.online]).sort()).toEqual([["pa001", true], ["t01", true]]);
    expect(members.find((m) => m.user === "t01")!.name).toContain("Colin");

    const typing: string[][] = [];
    teacher.on("typing", (_ch, users) => typing.push(users));
    parent.typing(dm);
    await until(() => typing.some((u) => u.includes("pa001")), 10_000, "typing");

    const sent = await parent.sendMessage(dm, "Bonjour Madame, Léa sera absente demain.");
    expect(sent.seq).toBeGreaterThan(0);
    expect(sent.duplicate).toBe(false);
    const again = await parent.sendMessage(dm, "Bonjour Madame, Léa sera absente demain.", { clientId: sent.clientId });
    expect(again).toEqual({ ...sent, duplicate: true });
    await until(() => (seen.get(dm) ?? []).length >= 1, 10_000, "event");
    expect(seen.get(dm)!.map((e) => e.seq)).toEqual([sent.seq]);
    await until(() => teacher.channel(dm)!.unread === 1, 5_000, "unread");

    const reads: number[] = [];
    parent.on("read", (ch, user, seq) => ch === dm && user === "t01" && reads.push(seq));
    await teacher.markRead(dm);
    expect(teacher.channel(dm)!.unread).toBe(0);
    await until(() => reads.includes(sent.seq), 10_000, "read event");

    const answer = await teacher.sendMessage(dm, "Merci, bien noté.");
    const edited = await teacher.edit(dm, answer.seq, "Merci, c'est noté.");
    expect(edited).toBe(answer.seq + 1);
    const deleted = await teacher.delete(dm, answer.seq);
    expect(deleted).toBe(answer.seq + 2);
    const page = await parent.history(dm, { after: 0 });
    expect(page.entries.map((e) => e.kind)).toEqual(["message", "message", "edit", "delete"]);
    expect(page.entries[1]!.deleted).toBe(true);

    teacher.close();
    await until(() => presence.some(([u, on]) => u === "t01" && !on), 10_000, "offline presence");
  });

  it("groups: create, add members, leave, membership entries", async () => {
    const t = open("t07");
    const pupil = open("e003");
    await Promise.all([t.connect(), pupil.connect()]);
    const grp = await t.createGroup("Latin, sortie", ["e003"]);
    expect(grp).toMatch(/^grp:/);
    await until(() => pupil.channel(grp) !== undefined, 10_000, "channel_added");
    await t.addMembers(grp, ["e004"]);
    const removed: string[] = [];
    pupil.on("channelRemoved", (ch) => removed.push(ch));
    await pupil.leave(grp);
    await until(() => removed.includes(grp), 10_000, "channel_removed");
    const page = await t.history(grp, { after: 0 });
    expect(page.entries.filter((e) => e.kind === "membership").map((e) => e.joined)).toEqual([true, false]);
  });

  it("refuses what the school's rules forbid with a stable code", async () => {
    const pupil = open("e001");
    await pupil.connect();
    // A pupil may not write first to another class's pupil.
    const err = await pupil.openDirect("e060").catch((e: PreauError) => e);
    expect(err).toBeInstanceOf(PreauError);
    expect((err as PreauError).code).toBe("forbidden");
    const tooLong = await pupil.sendMessage(FORUM_6A, "x".repeat(100_000), { thread: 1 }).catch((e: PreauError) => e);
    expect((tooLong as PreauError).code).toBe("too_large");
    expect(pupil.outbox).toEqual([]);
  });
});

describe("forums and announcements", () => {
  it("threads: open, post, lock, pin, mute, report and moderate", async () => {
    const teacher = open("t01");
    const pupil = open("e002");
    await Promise.all([teacher.connect(), pupil.connect()]);
    const thread = await teacher.createThread(FORUM_6A, "Exposés", "Qui présente lundi ?");
    const post = await pupil.sendMessage(FORUM_6A, "Moi !", { thread });
    expect(post.seq).toBeGreaterThan(thread);
    await teacher.setThread(FORUM_6A, thread, { pinned: true });
    await teacher.setThread(FORUM_6A, thread, { locked: true });
    const locked = await pupil.sendMessage(FORUM_6A, "Et moi ?", { thread }).catch((e: PreauError) => e);
    expect((locked as PreauError).code).toBe("locked");
    await teacher.setThread(FORUM_6A, thread, { locked: false });
    await teacher.mute(FORUM_6A, "e002", 10);
    const muted = await pupil.sendMessage(FORUM_6A, "Encore moi", { thread }).catch((e: PreauError) => e);
    expect((muted as PreauError).code).toBe("muted");
    await teacher.mute(FORUM_6A, "e002", 0);

    const other = open("e005");
    await other.connect();
    const report = await other.report(FORUM_6A, post.seq, "message hors sujet");
    expect(report).not.toBe("");
    const queue = await teacher.reports();
    const mine = queue.find((r) => r.id === report)!;
    expect(mine.content).toBe("Moi !");
    await teacher.closeReport(report, "dismiss");
    expect((await teacher.reports()).some((r) => r.id === report)).toBe(false);
  });

  it("announcements: a teacher posts, a parent reads, the teacher sees the receipt", async () => {
    const teacher = open("t01");
    const parent = open("pa002");
    await Promise.all([teacher.connect(), parent.connect()]);
    const seen = collect(parent);
    const ann = await teacher.sendMessage(ANN_6A, "Sortie au musée vendredi.");
    await until(() => (seen.get(ANN_6A) ?? []).some((e) => e.seq === ann.seq), 10_000, "announcement");
    let receipts = await teacher.receipts(ANN_6A, ann.seq);
    expect(receipts.find((r) => r.user === "pa002")!.read).toBe(false);
    await parent.markRead(ANN_6A, ann.seq);
    await until(() => parent.channel(ANN_6A)!.unread === 0, 5_000, "read");
    receipts = await teacher.receipts(ANN_6A, ann.seq);
    expect(receipts.find((r) => r.user === "pa002")!.read).toBe(true);
    const refused = await parent.sendMessage(ANN_6A, "Merci").catch((e: PreauError) => e);
    expect((refused as PreauError).code).toBe("forbidden");
  });

  it("names users the school's rules let one know, and no others", async () => {
    const pupil = open("e002");
    await pupil.connect();
    const got = await pupil.profiles(["t01", "e001", "pa001", "e051", "nobody", "t01"]);
    expect(got.map((p) => [p.user, p.profile])).toEqual([["t01", "teacher"], ["e001", "pupil"], ["t01", "teacher"]]);
    expect(pupil.nameOf("t01")).toContain("Colin");
    expect(pupil.nameOf("pa001")).toBeUndefined();
    const tooMany = await pupil.request({ type: "profiles", users: Array.from({ length: 201 }, (_, i) => `u${i}`) }).catch((e: PreauError) => e);
    expect((tooMany as PreauError).code).toBe("bad_request");
  });

  it("answers ping and any command through request()", async () => {
    const c = open("s01");
    await c.connect();
    const ack = await c.request({ type: "ping" });
    expect(ack.id).toBeGreaterThan(0);
    const err = await c.request({ type: "history", channel: "grp:nope" }).catch((e: PreauError) => e);
    expect((err as PreauError).code).toBe("forbidden");
  });
});

describe("refused tokens", () => {
  it("a forged token stops the client as unauthorized (4001), without retrying for ever", async () => {
    const c = gw.client("e001", { token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJlMDAxIn0.c2lnbmF0dXJl" });
    const stops: string[] = [];
    c.on("stopped", (reason, detail) => stops.push(`${reason}: ${detail}`));
    const err = await c.connect().catch((e: PreauError) => e);
    expect((err as PreauError).code).toBe("unauthorized");
    expect(stops[0]).toMatch(/^unauthorized: token_(invalid|malformed)/);
  });

  it("a token provider asked again after a refusal gets a second chance", async () => {
    let calls = 0;
    const c = gw.client("e001", {
      token: async () => (++calls === 1 ? "not.a.token" : gw.token("e001")),
    });
    clients.push(c);
    const hello = await c.connect();
    expect(hello.user).toBe("e001");
    expect(calls).toBe(2);
  });
});
