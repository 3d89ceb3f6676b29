// Small DOM helpers, the app's dialogs, and its French labels.
import { PreauError, frenchMessage } from "../../src/index.js";

type Child = Node | string | null | undefined | false;

/** An element with attributes (functions become listeners: `onclick`) and children. */
export function h(tag: string, attrs: Record<string, unknown> = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === "function" && k.startsWith("on")) el.addEventListener(k.slice(2), v as EventListener);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

/** Removes every child. */
export function clear(el: Element): void {
  while (el.firstChild) el.firstChild.remove();
}

const time = new Intl.DateTimeFormat("fr-FR", { hour: "2-digit", minute: "2-digit" });
const day = new Intl.DateTimeFormat("fr-FR", { day: "numeric", month: "short" });
const full = new Intl.DateTimeFormat("fr-FR", { dateStyle: "short", timeStyle: "short" });

/** A date as a French reader expects it: the time today, the day this year, else the date. */
export function formatWhen(ms: number, now = Date.now()): string {
  const d = new Date(ms);
  const n = new Date(now);
  if (d.toDateString() === n.toDateString()) return time.format(d);
  if (d.getFullYear() === n.getFullYear()) return `${day.format(d)} à ${time.format(d)}`;
  return full.format(d);
}

const PROFILES: Record<string, [string, string]> = {
  pupil: ["Élève", "Élèves"],
  parent: ["Parent", "Parents"],
  teacher: ["Enseignant·e", "Enseignants"],
  staff: ["Vie scolaire", "Vie scolaire"],
  admin: ["Direction", "Direction"],
};

/** A profile in French. */
export function profileLabel(profile: string, plural = false): string {
  const p = PROFILES[profile];
  return p ? p[plural ? 1 : 0] : profile;
}

/** A channel kind in French. */
export function kindLabel(kind: string): string {
  return { forum: "Forum de la classe", announcements: "Annonces de la classe", direct: "Conversation", group: "Groupe" }[kind] ?? kind;
}

const ICONS: Record<string, string> = {
  // A padlock and a pin, drawn here: emoji fonts are missing on many school computers.
  lock: "M7 10V7a5 5 0 0 1 10 0v3h1a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H6a1 1 0 0 1-1-1v-9a1 1 0 0 1 1-1h1zm2 0h6V7a3 3 0 0 0-6 0v3z",
  pin: "M14 2l8 8-3 1-4 4 1 5-2 2-4-6-6 6-1-1 6-6-6-4 2-2 5 1 4-4z",
};

/** A small icon (decorative: the text next to it says the same). */
export function icon(name: keyof typeof ICONS): SVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]!);
  path.setAttribute("fill", "currentColor");
  svg.append(path);
  return svg;
}

/** A person one may choose to write to. */
export interface Person {
  id: string;
  name: string;
  profile: string;
  school?: string;
}

/** A button that runs `onclick` (its visible label is its name unless `aria` says more). */
export function button(label: string, onclick: () => void, cls = "", aria?: string): HTMLElement {
  return h("button", { type: "button", class: cls, onclick, ...(aria ? { "aria-label": aria } : {}) }, label);
}

/** A modal form: `onSubmit` runs on its button; a refusal shows in French inside it. */
export function dialog(titleText: string, body: HTMLElement[], submit: string, onSubmit: (d: HTMLDialogElement) => Promise<void>): void {
  const err = h("p", { class: "error", role: "alert" });
  const d = h(
    "dialog",
    { "aria-labelledby": "dialog-title" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "dialog-title" }, titleText),
      ...body,
      err,
      h("div", { class: "actions" }, h("button", { type: "submit", value: "ok" }, submit), h("button", { type: "button", class: "quiet", onclick: () => d.close() }, "Annuler")),
    ),
  ) as HTMLDialogElement;
  d.querySelector("form")!.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await onSubmit(d);
      d.close();
    } catch (e) {
      err.textContent = e instanceof PreauError ? frenchMessage(e.code) : frenchMessage("internal");
    }
  });
  d.addEventListener("close", () => d.remove());
  document.body.append(d);
  d.showModal();
}

/** A yes/cancel question. */
export function confirmDialog(text: string, yes: string, onYes: () => Promise<void>): void {
  dialog("Confirmation", [h("p", {}, text)], yes, onYes);
}

/** People as options of a select, grouped by profile. */
export function personOptions(select: HTMLElement, people: Person[]): void {
  const sorted = [...people].sort((a, b) => a.profile.localeCompare(b.profile) || a.name.localeCompare(b.name, "fr"));
  for (const profile of ["teacher", "staff", "admin", "parent", "pupil"]) {
    const group = h("optgroup", { label: profileLabel(profile, true) });
    for (const p of sorted.filter((x) => x.profile === profile)) group.append(h("option", { value: p.id }, p.name));
    if (group.children.length) select.append(group);
  }
}
