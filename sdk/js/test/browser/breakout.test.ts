// Breakout groups (issue 15, item 1), as a class lives them: the teacher splits four
// pupils into two groups at random; each pupil's page moves to its group by itself and
// the pupils see and hear each other there; the teacher visits a group (pictures both
// ways), speaks to every group, and brings everyone back, pictures flowing in the class
// again. Real gateway, real SFU, Debian's Chromium with fake camera and microphone. (Two
// SFU nodes through Redis: sfu/tests/placement.rs.)
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Page } from "playwright-core";
import { DESKTOP, LiveClass, PHONE, shot } from "./browser.js";

let live: LiveClass;

beforeAll(async () => {
  live = await LiveClass.start();
});
afterAll(() => live?.stop());

const enter = (user: string, viewport = PHONE): Promise<Page> => live.enter(user, viewport);

type State = { waiting: unknown[]; group: { id: string } | null; members: Map<number, unknown> };
const state = (p: Page) => p.evaluate(() => {
  const s = (window as unknown as { preau: { state: State } }).preau.state;
  return { waiting: s.waiting.length, group: s.group ? s.group.id : null, members: s.members.size };
});
/** Pictures decoding on the page: tiles showing a live video. */
const pictures = (p: Page) => p.locator(".tile.has-video").count();

// Five pages each encoding three simulcast layers on two cores, against a debug SFU: a
// minute and a half here. The steps are logged, so a slow one shows which.
let t0 = Date.now();
const step = (what: string) => console.log(`breakout test: ${what} at ${((Date.now() - t0) / 1000).toFixed(1)} s`);

it("breakout groups: split at random, pictures in each group, a visit, a word to all, the recall", async () => {
  t0 = Date.now();
  const teacher = await enter("t01", DESKTOP);
  const pupils: Page[] = [];
  for (const u of ["e001", "e002", "e003", "e004"]) pupils.push(await enter(u));
  await teacher.waitForFunction(() => (window as unknown as { preau: { state: State } }).preau.state.waiting.length === 4, null, { timeout: 30_000 });
  await teacher.getByRole("button", { name: "Faire entrer tout le monde" }).click();
  for (const p of pupils) await p.locator(".tile.has-video").first().waitFor({ timeout: 30_000 });

  step("everyone in class with pictures");
  await teacher.getByLabel("Nombre de groupes").fill("2");
  await teacher.getByRole("button", { name: "Répartir au hasard" }).click();
  const groupOf = new Map<Page, string>();
  for (const p of pupils) {
    await p.locator("#groupBar", { hasText: /Vous êtes dans le Groupe [12]/ }).waitFor({ timeout: 20_000 });
    groupOf.set(p, (await state(p)).group!);
  }
  expect([...groupOf.values()].sort()).toEqual(["g1", "g1", "g2", "g2"]);
  step("pupils in their groups");
  // In each group the two pupils see each other (their own tile and the other's).
  for (const p of pupils) await expect.poll(() => pictures(p), { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
  await shot(pupils[0]!, "40-breakout-group-pupil-phone");
  step("pictures in each group");
  await shot(teacher, "41-breakout-groups-teacher-desktop");

  // The teacher visits group 1: pictures both ways.
  await teacher.getByRole("button", { name: "Rejoindre" }).first().click();
  await teacher.locator("#groupBar", { hasText: "Groupe 1" }).waitFor({ timeout: 20_000 });
  step("the teacher in group 1");
  await expect.poll(() => pictures(teacher), { timeout: 30_000 }).toBeGreaterThanOrEqual(3);
  step("the teacher sees group 1");
  const inG1 = pupils.filter((p) => groupOf.get(p) === "g1");
  for (const p of inG1) await expect.poll(() => pictures(p), { timeout: 30_000 }).toBeGreaterThanOrEqual(3);
  await shot(teacher, "42-breakout-visit-teacher-desktop");
  step("the visit");

  // A word to every group, heard in both.
  await teacher.getByLabel("Message à tous les groupes").fill("Plus que deux minutes !");
  await teacher.getByRole("button", { name: "Envoyer à tous les groupes" }).click();
  for (const p of pupils) await p.locator("#broadcastNote", { hasText: "Plus que deux minutes !" }).waitFor({ timeout: 10_000 });
  await shot(pupils[3]!, "43-breakout-broadcast-pupil-phone");
  step("the word to all");

  // Everyone back in the class, the teacher too, with the teacher's picture again.
  await teacher.getByRole("button", { name: "Ramener tout le monde" }).click();
  await teacher.getByRole("button", { name: "Confirmer" }).click();
  for (const p of [teacher, ...pupils]) {
    await p.locator("#groupBar").waitFor({ state: "hidden", timeout: 20_000 });
    await expect.poll(async () => (await state(p)).group, { timeout: 5_000 }).toBeNull();
  }
  for (const p of pupils) {
    await expect.poll(async () => (await state(p)).members, { timeout: 20_000 }).toBe(5);
    await p.locator(".tile.has-video").first().waitFor({ timeout: 90_000 });
  }
  await shot(pupils[0]!, "44-breakout-back-in-class-pupil-phone");
  step("back in class");
}, 240_000);
