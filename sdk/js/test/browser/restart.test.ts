// The page survives the gateway restarting mid-conversation: it says it is offline,
// keeps what is written meanwhile, and once the gateway is back nothing is lost or
// doubled.
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { Gateway } from "../gateway.js";
import { DESKTOP, PHONE, launch, open, shootFailure, shot } from "./browser.js";

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

it("the page survives a gateway restart mid-conversation with nothing lost", async () => {
  const parent = await open(browser, gw.http, "pa010", PHONE);
  const teacher = await open(browser, gw.http, "t02", DESKTOP);
  const p = parent.page;
  const t = teacher.page;
  await p.getByRole("button", { name: "Nouvelle conversation" }).click();
  await p.getByLabel("Avec").selectOption("t02");
  await p.getByRole("button", { name: "Ouvrir" }).click();
  await p.getByLabel("Votre message").fill("Premier message avant la coupure.");
  await p.getByRole("button", { name: "Envoyer" }).click();
  await t.getByRole("link", { name: /Parent .*1 non lu/ }).click();
  await t.locator(".msg .body", { hasText: "Premier message avant la coupure." }).waitFor();

  await gw.kill9();
  await p.getByText(/Hors ligne · nouvelle tentative|Reconnexion…/).first().waitFor({ timeout: 15_000 });
  await p.getByLabel("Votre message").fill("Écrit pendant la coupure.");
  await p.getByRole("button", { name: "Envoyer" }).click();
  await p.getByText("En attente d'envoi…").waitFor();
  await shot(p, "14-parent-offline-pending");

  await gw.restart();
  await p.locator("#status[data-state=online]").waitFor({ timeout: 30_000 });
  await t.locator(".msg .body", { hasText: "Écrit pendant la coupure." }).waitFor({ timeout: 30_000 });
  await p.getByText("En attente d'envoi…").waitFor({ state: "detached", timeout: 10_000 });
  await t.getByLabel("Votre message").fill("Bien reçu après le redémarrage.");
  await t.getByLabel("Votre message").press("Enter");
  await p.locator(".msg .body", { hasText: "Bien reçu après le redémarrage." }).waitFor({ timeout: 10_000 });
  await shot(p, "15-parent-after-restart");
  await shot(t, "16-teacher-after-restart");
  // Each message once on both pages.
  for (const page of [p, t]) {
    for (const text of ["Premier message avant la coupure.", "Écrit pendant la coupure.", "Bien reçu après le redémarrage."]) {
      expect(await page.locator(".msg .body", { hasText: text }).count(), text).toBe(1);
    }
  }
  expect((p as unknown as { errors: string[] }).errors).toEqual([]);
  await parent.ctx.close();
  await teacher.ctx.close();
});
