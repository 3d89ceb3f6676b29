// Small DOM helpers and the French labels of the app.

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
