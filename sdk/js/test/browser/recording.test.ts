// A class recording (issue 15, item 2), as a teacher and a pupil live it: the teacher
// records from the classroom page, the pupil's page says the class is recorded; the
// finished file is listed in the class announcements, where the pupil's web app offers
// it; the pupil's link downloads it, and ffprobe (Debian's ffmpeg) reads a WebM with the
// teacher's VP8 picture and Opus voices of the length recorded. A parent of another
// class gets no link. Real gateway, real SFU, Debian's Chromium with fake media.
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { HttpError, recordingLink, recordingOf } from "../../src/index.js";
import { ANN_6A, type Gateway, sleep } from "../gateway.js";
import { DESKTOP, LiveClass, PHONE, open, shot } from "./browser.js";

const API_KEY = "sfu-recordings-key-0123456789abcdef";
let live: LiveClass;
let gw: Gateway;
let browser: Browser;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "preau-rec-"));
  const keys = join(dir, "api-keys.json");
  writeFileSync(keys, JSON.stringify({ keys: [{ name: "sfu", key: API_KEY, schools: ["*"] }] }));
  const keyFile = join(dir, "sfu.key");
  writeFileSync(keyFile, API_KEY);
  live = await LiveClass.start(["--api-keys-file", keys], (g) => ["--gateway-url", g.http, "--gateway-api-key-file", keyFile]);
  ({ gw, browser } = live);
});
afterAll(() => live?.stop());

const enter = (user: string, viewport = PHONE): Promise<Page> => live.enter(user, viewport);

it("a recording started and stopped by the teacher is seen by the pupil, listed, downloaded and probed", async () => {
  const teacher = await enter("t01", DESKTOP);
  const pupil = await enter("e001");
  await teacher.waitForFunction(() => (window as unknown as { preau: { state: { waiting: unknown[] } } }).preau.state.waiting.length === 1, null, { timeout: 20_000 });
  await teacher.getByRole("button", { name: "Faire entrer tout le monde" }).click();
  // The teacher's picture reaches the pupil before the recording starts.
  await pupil.locator(".tile.has-video").first().waitFor({ timeout: 30_000 });

  await teacher.getByRole("button", { name: "Enregistrer le cours" }).click();
  await pupil.locator("#rec", { hasText: "Enregistrement en cours" }).waitFor({ state: "visible", timeout: 10_000 });
  await teacher.locator("#rec").waitFor({ state: "visible" });
  await shot(pupil, "30-classroom-recorded-pupil-phone");
  await shot(teacher, "31-classroom-recording-teacher-desktop");
  await sleep(5_000);
  await teacher.getByRole("button", { name: "Arrêter l'enregistrement" }).click();
  await pupil.locator("#rec").waitFor({ state: "hidden", timeout: 10_000 });
  await pupil.getByText("L'enregistrement est terminé").waitFor();

  // Listed in the class announcements, through the gateway, by the SFU.
  const reader = gw.client("e001");
  await reader.connect();
  let seq = 0;
  for (let i = 0; i < 100 && !seq; i++) {
    const page = await reader.history(ANN_6A, { after: 0 });
    const e = page.entries.find((x) => x.kind === "recording");
    if (e) {
      seq = e.seq;
      expect(e.author).toBe("t01");
      const info = recordingOf(e)!;
      expect(info.duration_ms).toBeGreaterThan(3_500);
    } else await sleep(200);
  }
  expect(seq).toBeGreaterThan(0);
  reader.close();

  // The pupil's web app offers it in the announcements.
  const { page: app } = await open(browser, gw.http, "e001");
  await app.getByRole("link", { name: /Annonces 6e A/ }).click();
  await app.getByText(/Enregistrement du cours · \d+ s · \d+ ko/).waitFor({ timeout: 10_000 });
  await app.getByRole("button", { name: /Télécharger l'enregistrement/ }).waitFor();
  await shot(app, "32-app-recording-listed-pupil-phone");

  // The pupil's link downloads it; ffprobe reads it back.
  const link = await recordingLink(gw.http, await gw.token("e001"), ANN_6A, seq);
  const res = await fetch(link.url);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("video/webm");
  expect(res.headers.get("content-disposition")).toMatch(/attachment; filename="cours-6A-\d{4}-\d{2}-\d{2}\.webm"/);
  const file = join(dir, "download.webm");
  writeFileSync(file, Buffer.from(await res.arrayBuffer()));
  const probe = spawnSync("ffprobe", ["-v", "error", "-count_packets", "-show_streams", "-show_format", "-of", "json", file], { encoding: "utf8" });
  expect(probe.status, probe.stderr).toBe(0);
  const p = JSON.parse(probe.stdout) as { format: { duration: string; format_name: string }; streams: { codec_name: string; width?: number; nb_read_packets?: string }[] };
  expect(p.format.format_name).toContain("webm");
  const duration = Number(p.format.duration);
  expect(duration).toBeGreaterThan(3.5);
  expect(duration).toBeLessThan(9);
  const video = p.streams.filter((s) => s.codec_name === "vp8");
  expect(video).toHaveLength(1);
  expect(video[0]!.width).toBeGreaterThan(0);
  expect(Number(video[0]!.nb_read_packets)).toBeGreaterThan(30);
  const voices = p.streams.filter((s) => s.codec_name === "opus");
  expect(voices.length).toBeGreaterThanOrEqual(1);
  expect(Number(voices[0]!.nb_read_packets)).toBeGreaterThan(100);

  // A parent of another class is not given a link.
  await expect(recordingLink(gw.http, await gw.token("pa050"), ANN_6A, seq)).rejects.toBeInstanceOf(HttpError);
  // The link alone, without its token, downloads nothing.
  expect((await fetch(link.url.split("?")[0]!)).status).toBe(401);
});
