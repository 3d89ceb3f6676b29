// WCAG AA contrast of the app's colour pairs (app/app.css): 4.5:1 for text, 3:1 for
// focus rings and the presence dot against their background.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const css = readFileSync(new URL("../app/app.css", import.meta.url), "utf8");
const vars = Object.fromEntries([...css.matchAll(/--([a-z-]+):\s*(#[0-9a-f]{6})/gi)].map((m) => [m[1]!, m[2]!]));

function luminance(hex: string): number {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255).map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  return 0.2126 * r! + 0.7152 * g! + 0.0722 * b!;
}
function ratio(a: string, b: string): number {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x! + 0.05) / (y! + 0.05);
}
const v = (name: string) => {
  const c = name.startsWith("#") ? name : vars[name];
  if (!c) throw new Error(`no --${name} in app.css`);
  return c;
};

describe("contrast (WCAG AA)", () => {
  // [text, background] pairs the stylesheet uses.
  const text: [string, string][] = [
    ["ink", "bg"], ["muted", "bg"], ["muted", "soft"], ["ink", "mine"], ["muted", "mine"], ["ink", "soft"],
    ["accent-ink", "accent"], ["accent", "bg"], ["alert", "bg"], ["ok", "bg"], ["#ffffff", "alert"],
    ["accent", "accent-ink"], ["ok", "accent-ink"], ["alert", "accent-ink"], ["#4d3800", "#fff4d6"],
  ];
  it.each(text)("text %s on %s is at least 4.5:1", (fg, bg) => {
    expect(ratio(v(fg), v(bg))).toBeGreaterThanOrEqual(4.5);
  });
  it("the focus ring and the presence dot stand out (3:1)", () => {
    expect(ratio(v("focus"), v("bg"))).toBeGreaterThanOrEqual(3);
    expect(ratio(v("ok"), v("bg"))).toBeGreaterThanOrEqual(3);
  });
});
