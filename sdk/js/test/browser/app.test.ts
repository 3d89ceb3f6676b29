// The messaging app in Chromium, as families, pupils and teachers use it: a phone
// (390x844) and a desktop (1280x800), two browser contexts talking through the real
// gateway. Each step writes a screenshot to test-results/screenshots/.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { Gateway } from "../gateway.js";
import { DESKTOP, PHONE, checkAccessible, launch, open, shootFailure, shot } from "./browser.js";

let gw: Gateway;
let browser: Browser;

beforeAll(async () => {
  gw = await Gateway.start();
  browser = await launch();
});
afterEach(async (ctx) => {
  if (ctx.task.result?.state === "fail") await shootFailure(ctx.task.name);
});
afterAll(async () => {
  await browser?.close();
  await gw?.stop();
});

describe("the messaging app", () => {
  it("a parent writes to their child's teacher on a phone; the teacher answers on a desktop", async () => {
    const parent = await open(browser, gw.http, "pa001", PHONE);
    const teacher = await open(browser, gw.http, "t01", DESKTOP);
    const p = parent.page;
    const t = teacher.page;
    await shot(p, "01-parent-phone-list");
    expect(await checkAccessible(p)).toEqual([]);

    await p.getByRole("button", { name: "Nouvelle conversation" }).click();
    await p.getByLabel("Avec").selectOption("t01");
    await shot(p, "02-parent-new-conversation");
    await p.getByRole("button", { name: "Ouvrir" }).click();
    await p.getByRole("heading", { name: "Mme Colin (français)" }).waitFor();
    await p.getByLabel("Votre message").fill("Bonjour Madame, Léa sera absente demain matin.");
    await p.getByRole("button", { name: "Envoyer" }).click();
    await p.locator(".msg .body", { hasText: "Bonjour Madame, Léa sera absente demain matin." }).waitFor();
    await shot(p, "03-parent-sent");

    // The teacher sees the new conversation with an unread badge, by the parent's name.
    const link = t.getByRole("link", { name: /Parent .*1 non lu/ });
    await link.waitFor({ timeout: 10_000 });
    await shot(t, "04-teacher-unread");
    await link.click();
    await t.locator(".msg .body", { hasText: "Bonjour Madame, Léa sera absente demain matin." }).waitFor();
    await t.getByLabel("Votre message").fill("Merci, c'est noté. Bon rétablissement à Léa.");
    await t.getByLabel("Votre message").press("Enter");
    await p.locator(".msg .body", { hasText: "Merci, c'est noté. Bon rétablissement à Léa." }).waitFor({ timeout: 10_000 });
    // The parent sees who wrote it, by name, and the date in French.
    const answer = p.locator(".msg", { hasText: "Merci, c'est noté." });
    expect(await answer.locator(".who").textContent()).toBe("Mme Colin (français)");
    expect(await answer.locator("time").textContent()).toMatch(/^\d{2}:\d{2}$/);
    await shot(p, "05-parent-answer");
    await shot(t, "06-teacher-desktop");
    expect(await checkAccessible(t)).toEqual([]);
    expect(await checkAccessible(p)).toEqual([]);
    await parent.ctx.close();
    await teacher.ctx.close();
  });

  it("a pupil posts in the class forum; the teacher locks the thread", async () => {
    const teacher = await open(browser, gw.http, "t02", DESKTOP);
    const pupil = await open(browser, gw.http, "e003", PHONE);
    const t = teacher.page;
    const p = pupil.page;
    await t.getByRole("link", { name: "Forum 6e A" }).click();
    await t.getByLabel("Titre du nouveau sujet").fill("Exercices de géométrie");
    await t.getByLabel("Premier message").fill("Posez vos questions ici.");
    await t.getByRole("button", { name: "Créer le sujet" }).click();
    await t.getByRole("button", { name: "Verrouiller" }).waitFor();

    await p.getByRole("link", { name: "Forum 6e A" }).click();
    await p.getByRole("link", { name: /Exercices de géométrie/ }).click();
    await p.getByLabel("Votre réponse").fill("Je ne comprends pas l'exercice 3.");
    await p.getByRole("button", { name: "Envoyer" }).click();
    await t.locator(".msg .body", { hasText: "Je ne comprends pas l'exercice 3." }).waitFor({ timeout: 10_000 });
    await shot(p, "07-pupil-forum-post");

    await t.getByRole("button", { name: "Verrouiller" }).click();
    await t.getByRole("button", { name: "Déverrouiller" }).waitFor();
    await shot(t, "08-teacher-locked");
    await p.getByText("Sujet verrouillé : plus de réponses.").waitFor({ timeout: 10_000 });
    // The pupil can no longer answer, and is told why.
    await p.getByText("Ce sujet est verrouillé : vous ne pouvez plus y répondre.").waitFor({ timeout: 10_000 });
    expect(await p.getByLabel("Votre réponse").count()).toBe(0);
    await shot(p, "09-pupil-locked");
    expect(await checkAccessible(p)).toEqual([]);
    await teacher.ctx.close();
    await pupil.ctx.close();
  });

  it("a teacher posts an announcement and sees a parent's read receipt", async () => {
    const teacher = await open(browser, gw.http, "t05", DESKTOP);
    const parent = await open(browser, gw.http, "pa004", PHONE);
    const t = teacher.page;
    const p = parent.page;
    await t.getByRole("link", { name: "Annonces 6e A" }).click();
    await t.getByLabel("Nouvelle annonce").fill("Réunion parents-professeurs jeudi à 18 h.");
    await t.getByRole("button", { name: "Publier" }).click();
    await t.locator(".msg", { hasText: "Réunion parents-professeurs" }).getByRole("button", { name: "Qui a lu ?" }).click();
    await t.getByText(/^Lu par 0 sur \d+$/).waitFor();

    await p.getByRole("link", { name: /Annonces 6e A, 1 non lu/ }).click();
    await p.locator(".msg .body", { hasText: "Réunion parents-professeurs jeudi à 18 h." }).waitFor();
    await shot(p, "10-parent-reads-announcement");

    // Opening the channel marked it read: the teacher asks again and sees the parent.
    const receipts = t.locator(".msg", { hasText: "Réunion parents-professeurs" });
    for (let i = 0; i < 50; i++) {
      await receipts.getByRole("button", { name: "Qui a lu ?" }).click();
      if ((await receipts.locator(".receipts li").allTextContents()).some((n) => n.includes("Parent"))) break;
      await t.waitForTimeout(200);
    }
    expect(await receipts.getByText(/^Lu par [1-9]\d* sur \d+$/).count()).toBe(1);
    expect((await receipts.locator(".receipts li").allTextContents()).join()).toMatch(/Parent .+ \(4\)/);
    await shot(t, "11-teacher-read-receipt");
    await teacher.ctx.close();
    await parent.ctx.close();
  });

  it("a suspension of messaging is shown, in French, and writing is refused until it is lifted", async () => {
    // An open thread (the one of the test before is locked).
    const t02 = gw.client("t02");
    await t02.connect();
    await t02.createThread("forum:0750001A:6A", "Questions libres", "Posez-les ici.");
    t02.close();
    const pupil = await open(browser, gw.http, "e007", PHONE);
    const p = pupil.page;
    const admin = await gw.token("ad01");
    const suspend = (suspended: boolean) =>
      fetch(`${gw.http}/admin/suspension`, {
        method: "PUT",
        headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
        body: JSON.stringify({ scope: "school", suspended, reason: "incident en cours de traitement" }),
      });
    expect((await suspend(true)).status).toBe(200);
    // Keyboard only: Tab to the class forum's link, Enter opens it.
    const link = p.getByRole("link", { name: "Forum 6e A" });
    for (let i = 0; i < 10 && !(await link.evaluate((el) => el === document.activeElement)); i++) await p.keyboard.press("Tab");
    await p.keyboard.press("Enter");
    await p.getByRole("heading", { name: "Forum 6e A" }).waitFor();
    const thread = p.getByRole("link", { name: /Questions libres/ });
    await thread.focus();
    await p.keyboard.press("Enter");
    await p.getByLabel("Votre réponse").fill("Bonjour");
    await p.getByLabel("Votre réponse").press("Enter");
    await p.getByText("La messagerie est suspendue pour le moment. La lecture reste possible.").waitFor();
    await p.getByText(/La messagerie est suspendue dans votre établissement : incident en cours de traitement/).waitFor();
    await shot(p, "12-suspended");
    // Escape goes back to the list.
    await p.keyboard.press("Escape");
    await p.getByRole("link", { name: "Annonces 6e A" }).waitFor();
    expect((await suspend(false)).status).toBe(200);
    await pupil.ctx.close();
  });

  it("a pupil reports a post; a teacher of the class deletes it from the queue", async () => {
    const author = await open(browser, gw.http, "e008", PHONE);
    const reporter = await open(browser, gw.http, "e009", PHONE);
    const teacher = await open(browser, gw.http, "t05", DESKTOP);
    const [a, r, t] = [author.page, reporter.page, teacher.page];
    for (const p of [a, r]) {
      await p.getByRole("link", { name: "Forum 6e A" }).click();
      await p.getByRole("link", { name: /Questions libres/ }).click();
    }
    await a.getByLabel("Votre réponse").fill("Un message qui n'a rien à faire ici.");
    await a.getByRole("button", { name: "Envoyer" }).click();
    const post = r.locator(".msg", { hasText: "Un message qui n'a rien à faire ici." });
    await post.waitFor({ timeout: 10_000 });
    await post.getByRole("button", { name: /^Signaler le message de / }).click();
    await r.getByLabel("Pourquoi le signalez-vous ?").fill("Ce message se moque d'un camarade.");
    await r.getByRole("button", { name: "Envoyer le signalement" }).click();
    await r.locator("#pane-error", { hasText: "Signalement envoyé à l'équipe de l'établissement." }).waitFor();
    await shot(r, "13a-pupil-report");

    await t.getByRole("link", { name: "Signalements à traiter" }).click();
    const item = t.locator("#reports .msg", { hasText: "Un message qui n'a rien à faire ici." });
    await item.waitFor();
    expect(await item.locator(".meta").textContent()).toContain("Ce message se moque d'un camarade.");
    await shot(t, "13b-teacher-reports-queue");
    await item.getByRole("button", { name: "Supprimer le message" }).click();
    await t.getByText("Aucun signalement en attente.").waitFor({ timeout: 10_000 });
    await a.locator(".msg.deleted", { hasText: "Message supprimé" }).waitFor({ timeout: 10_000 });
    for (const c of [author, reporter, teacher]) await c.ctx.close();
  });

  it("groups: a teacher creates one, adds a member; a pupil leaves it after confirming", async () => {
    const teacher = await open(browser, gw.http, "t07", DESKTOP);
    const pupil = await open(browser, gw.http, "e004", PHONE);
    const [t, p] = [teacher.page, pupil.page];
    await t.getByRole("button", { name: "Nouveau groupe" }).click();
    await t.getByLabel("Nom du groupe").fill("Latin, sortie à Arles");
    await t.getByLabel("Membres (plusieurs choix possibles)").selectOption(["e003", "e004"]);
    await t.getByRole("button", { name: "Créer" }).click();
    await t.getByRole("heading", { name: "Latin, sortie à Arles" }).waitFor();
    await t.getByRole("button", { name: "Ajouter des membres" }).click();
    await t.getByLabel("Personnes (plusieurs choix possibles)").selectOption(["e005"]);
    await t.getByRole("button", { name: "Ajouter", exact: true }).click();
    await t.getByText(/a rejoint le groupe/).first().waitFor({ timeout: 10_000 });

    await p.getByRole("link", { name: /Latin, sortie à Arles/ }).click();
    await p.getByRole("button", { name: "Quitter le groupe" }).click();
    await p.getByText("Quitter le groupe « Latin, sortie à Arles » ? Vous ne recevrez plus ses messages.").waitFor();
    await p.getByRole("button", { name: "Quitter", exact: true }).click();
    await p.getByText("Choisissez une classe ou une conversation.").waitFor({ state: "attached", timeout: 10_000 });
    expect(await p.getByRole("link", { name: /Latin, sortie à Arles/ }).count()).toBe(0);
    await t.getByText(/a quitté le groupe/).waitFor({ timeout: 10_000 });
    await shot(t, "13c-teacher-group");
    await teacher.ctx.close();
    await pupil.ctx.close();
  });

  it("a refused action shows a French message", async () => {
    const pupil = await open(browser, gw.http, "e001", PHONE);
    const p = pupil.page;
    await p.getByRole("button", { name: "Nouvelle conversation" }).click();
    // A pupil of 4C: not a classmate, so the school's rules refuse it.
    const option = await p.locator("#new-person option").evaluateAll((os) => (os as HTMLOptionElement[]).map((o) => o.value));
    expect(option).toContain("e060");
    await p.getByLabel("Avec").selectOption("e060");
    await p.getByRole("button", { name: "Ouvrir" }).click();
    await p.getByText("Les règles de l'établissement ne permettent pas cette action.").waitFor();
    await shot(p, "13-refused-in-french");
    await pupil.ctx.close();
  });
});
