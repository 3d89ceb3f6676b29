// The live-class helpers against the real gateway and SFU: a room ticket, the join, the
// waiting room and admission, typed events, refusals with their codes.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { HttpError, LiveError, LiveSession, roomToken, type Live, type WebSocketConstructor } from "../src/index.js";
import { Gateway, Sfu, freePort, until } from "./gateway.js";

let gw: Gateway;
let sfu: Sfu;
const sessions: LiveSession[] = [];
const Ws = WebSocket as unknown as WebSocketConstructor;

beforeAll(async () => {
  const port = await freePort();
  gw = await Gateway.start(["--sfu-url", `ws://127.0.0.1:${port}/ws`]);
  sfu = await Sfu.start(gw, port);
});
afterAll(async () => {
  for (const s of sessions) s.leave();
  await sfu?.stop();
  await gw?.stop();
});

describe("live classes", () => {
  it("a teacher hosts, a pupil waits and is admitted, a parent is refused a ticket", async () => {
    const ticket = await roomToken(gw.http, await gw.token("t01"), "6A");
    expect(ticket.role).toBe("host");
    expect(ticket.room).toBe("class:6A");
    expect(ticket.sfu).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/ws$/);
    const host = new LiveSession(ticket, Ws);
    sessions.push(host);
    const waiting: Live.Event[] = [];
    host.on("waiting_list", (f) => waiting.push(f));
    const welcome = await host.join();
    expect(welcome.role).toBe("host");

    const pupilTicket = await roomToken(gw.http, await gw.token("e001"), "6A");
    expect(pupilTicket.role).toBe("participant");
    const pupil = new LiveSession(pupilTicket, Ws);
    sessions.push(pupil);
    let waited = false;
    let members: string[] = [];
    pupil.on("waiting", () => (waited = true));
    pupil.on("admitted", (f) => (members = f.members.map((m) => m.user)));
    const pw = await pupil.join();
    await until(() => waited && waiting.length > 0, 10_000, "the waiting room");
    const last = waiting[waiting.length - 1] as Extract<Live.Event, { type: "waiting_list" }>;
    expect(last.waiting[0]![0]).toBe(pw.peer);
    await host.request({ type: "admit", peer: pw.peer });
    await until(() => members.length === 2, 10_000, "admitted");
    expect(members.sort()).toEqual(["e001", "t01"]);

    // A pupil may not do the host's work: a stable code.
    const err = await pupil.request({ type: "lock", locked: true }).catch((e: LiveError) => e);
    expect(err).toBeInstanceOf(LiveError);
    expect((err as LiveError).code).toBe("not_host");
    const hands: boolean[] = [];
    host.on("hand", (f) => hands.push(f.raised));
    await pupil.raiseHand();
    await until(() => hands.includes(true), 10_000, "the hand");

    const parent = await roomToken(gw.http, await gw.token("pa001"), "6A").catch((e: HttpError) => e);
    expect(parent).toBeInstanceOf(HttpError);
    expect((parent as HttpError).status).toBe(403);
    expect((parent as HttpError).code).toBe("forbidden");
  });
});
