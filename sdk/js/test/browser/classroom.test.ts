// The live class's chat (issue 15, item 3): a thread of the class forum, through the
// gateway, beside the video. The teacher's page opens it when the class starts; pupils
// admitted later see what was said; the teacher closes it to pupils; it stays in the
// forum's history. Real gateway, real SFU, Debian's Chromium with fake camera and
// microphone.
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Page } from "playwright-core";
import { FORUM_6A, type Gateway } from "../gateway.js";
import { DESKTOP, LiveClass, PHONE, shot } from "./browser.js";

let live: LiveClass;
let gw: Gateway;

beforeAll(async () => {
  live = await LiveClass.start();
  gw = live.gw;
});
afterAll(() => live?.stop());

const enter = (user: string, viewport = PHONE): Promise<Page> => live.enter(user, viewport);

it("the class chat is a forum thread beside the video, closed to pupils by the teacher", async () => {
  const teacher = await enter("t01", DESKTOP);
  await teacher.locator("#chat").waitFor({ state: "visible", timeout: 20_000 });
  await teacher.getByLabel("Votre message").fill("Bonjour à tous, ouvrez vos cahiers.");
  await teacher.getByRole("button", { name: "Envoyer" }).click();

  const pupils = [await enter("e001"), await enter("e002")];
  await teacher.waitForFunction(() => (window as unknown as { preau: { state: { waiting: unknown[] } } }).preau.state.waiting.length === 2, null, { timeout: 20_000 });
  await teacher.getByRole("button", { name: "Faire entrer tout le monde" }).click();
  for (const p of pupils) {
    await p.locator("#chat").waitFor({ state: "visible", timeout: 20_000 });
    // What the teacher said before they came in, by name.
    await p.locator("#chatLog li", { hasText: "Bonjour à tous, ouvrez vos cahiers." }).waitFor();
    await expect.poll(() => p.locator("#chatLog li .who").first().textContent()).toBe("Mme Colin (français)");
  }
  await pupils[0]!.getByLabel("Votre message").fill("Bonjour madame !");
  await pupils[0]!.getByRole("button", { name: "Envoyer" }).click();
  await teacher.locator("#chatLog li", { hasText: "Bonjour madame !" }).first().waitFor({ timeout: 10_000 });
  await pupils[1]!.locator("#chatLog li", { hasText: "Bonjour madame !" }).first().waitFor({ timeout: 10_000 });
  await shot(pupils[1]!, "20-classroom-chat-pupil-phone");

  // The teacher closes the chat to pupils: their field is off and they are told.
  await teacher.getByRole("button", { name: "Fermer la discussion aux élèves" }).click();
  for (const p of pupils) {
    await p.getByText("L'enseignant a fermé la discussion.").waitFor({ timeout: 10_000 });
    expect(await p.getByLabel("Votre message").isDisabled()).toBe(true);
  }
  await teacher.getByLabel("Votre message").fill("Maintenant, on écoute.");
  await teacher.getByRole("button", { name: "Envoyer" }).click();
  await pupils[1]!.locator("#chatLog li", { hasText: "Maintenant, on écoute." }).waitFor({ timeout: 10_000 });
  await shot(teacher, "21-classroom-chat-teacher-desktop");
  await shot(pupils[0]!, "22-classroom-chat-closed-pupil-phone");

  // Durable: the forum's history holds the thread and its messages, under the forum's rules.
  const reader = gw.client("e003");
  await reader.connect();
  const page = await reader.history(FORUM_6A, { after: 0 });
  const thread = page.entries.find((e) => e.kind === "thread" && (e.title ?? "").startsWith("Classe en direct du"))!;
  expect(thread.locked).toBe(true);
  const said = page.entries.filter((e) => e.thread === thread.seq).map((e) => e.body);
  expect(said).toEqual(["Bonjour à tous, ouvrez vos cahiers.", "Bonjour madame !", "Maintenant, on écoute."]);
  reader.close();
});
