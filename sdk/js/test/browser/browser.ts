// Headless Chromium from Debian (never a downloaded browser) driven by playwright-core,
// at a phone's size and a desktop's, against the real gateway serving the app at `/`.
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { Gateway, Sfu, freePort } from "../gateway.js";

export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 800 };
export const shots = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "test-results", "screenshots");

export async function launch(extra: string[] = []): Promise<Browser> {
  const executablePath = process.env.PREAU_CHROMIUM ?? "/usr/bin/chromium";
  if (!existsSync(executablePath)) throw new Error(`${executablePath} is missing: apt-get install chromium`);
  mkdirSync(shots, { recursive: true });
  return chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", ...extra],
  });
}

const openPages = new Set<Page>();

/** Screenshots of every page still open, named after a failed test (what the pages showed
 * when it failed: the run's artefacts say more than a timeout). */
export async function shootFailure(test: string): Promise<void> {
  const base = test.replace(/[^a-z0-9]+/gi, "-").slice(0, 60);
  let i = 0;
  for (const page of openPages) {
    if (page.isClosed()) continue;
    await page.screenshot({ path: join(shots, `FAILED-${base}-${i++}.png`) }).catch(() => undefined);
  }
}

/** Chromium's fake camera and microphone, granted without asking, for the classroom. */
export const FAKE_MEDIA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required"];

/** A demo user's classroom page (served by the gateway at `base`), joining class 6A. */
export async function joinClass(browser: Browser, base: string, user: string, viewport = PHONE): Promise<Page> {
  const ctx = await browser.newContext({ viewport, locale: "fr-FR" });
  const page = await ctx.newPage();
  openPages.add(page);
  page.on("close", () => openPages.delete(page));
  await page.goto(`${base}/classroom`);
  await page.locator("#user option").first().waitFor({ state: "attached" });
  await page.selectOption("#user", user);
  await page.selectOption("#class", "6A");
  await page.getByRole("button", { name: "Rejoindre la classe" }).click();
  return page;
}

/** A live class's servers and browser: a gateway, an SFU beside it, Chromium with fake
 * camera and microphone. `sfuArgs` may name the gateway (its address). */
export class LiveClass {
  private constructor(
    readonly gw: Gateway,
    readonly sfu: Sfu,
    readonly browser: Browser,
  ) {}

  static async start(gwArgs: string[] = [], sfuArgs: (gw: Gateway) => string[] = () => []): Promise<LiveClass> {
    const port = await freePort();
    const gw = await Gateway.start(["--sfu-url", `ws://127.0.0.1:${port}/ws`, ...gwArgs]);
    const sfu = await Sfu.start(gw, port, sfuArgs(gw));
    return new LiveClass(gw, sfu, await launch(FAKE_MEDIA));
  }

  /** A demo user's classroom page, joining class 6A. */
  enter(user: string, viewport = PHONE): Promise<Page> {
    return joinClass(this.browser, this.gw.http, user, viewport);
  }

  async stop(): Promise<void> {
    await this.browser.close();
    await this.sfu.stop();
    await this.gw.stop();
  }
}

/** A signed-in page of a demo user (development mode's `?user=`). */
export async function open(browser: Browser, base: string, user: string, viewport = PHONE): Promise<{ ctx: BrowserContext; page: Page }> {
  const ctx = await browser.newContext({ viewport, locale: "fr-FR", timezoneId: "Europe/Paris" });
  const page = await ctx.newPage();
  openPages.add(page);
  page.on("close", () => openPages.delete(page));
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  (page as Page & { errors: string[] }).errors = errors;
  await page.goto(`${base}/?user=${user}`);
  await page.locator("#status[data-state=online]").waitFor({ timeout: 15_000 });
  return { ctx, page };
}

/** Writes a screenshot of a step. */
export async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });
}

/** Every form control has a label (its accessible name), and nothing overflows the
 * viewport sideways (a phone shows the whole width). */
export async function checkAccessible(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const problems: string[] = [];
    for (const el of document.querySelectorAll("input, select, textarea, button")) {
      const e = el as HTMLInputElement;
      const labelled =
        (e.labels && e.labels.length > 0) || e.getAttribute("aria-label") || e.getAttribute("aria-labelledby") || (el.tagName === "BUTTON" && el.textContent!.trim());
      if (!labelled) problems.push(`unlabelled ${el.tagName.toLowerCase()}#${el.id}`);
    }
    if (document.documentElement.scrollWidth > window.innerWidth + 1) {
      problems.push(`page ${document.documentElement.scrollWidth}px wide in a ${window.innerWidth}px viewport`);
    }
    const english = /\b(loading|error|send|message from|offline|online)\b/i;
    const text = document.body.innerText;
    if (english.test(text.replace(/En ligne|Hors ligne/g, ""))) problems.push(`English on the page: ${text.match(english)![0]}`);
    return problems;
  });
}
