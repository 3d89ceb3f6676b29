// The messaging web app on @preau/client: phone first, French, accessible. Served at `/`
// by a gateway in development mode, or built as static files an ENT hosts (config.js
// gives the addresses and how to get a token: sdk/js/README.md).
import { HttpError, PreauClient, PreauError, frenchMessage, recordingLink, recordingOf, type ChannelState, type Entry, type Status } from "../../src/index.js";
import { type Log, loadPage, newLog, take } from "./log.js";
import { type Person, button, clear, confirmDialog, dialog, formatWhen, h, icon, kindLabel, personOptions, profileLabel } from "./ui.js";

/** What an ENT's config.js may set (all optional in development mode). */
interface Config {
  /** The gateway's WebSocket address (default: this page's origin, `/ws`). */
  gateway?: string;
  /** The gateway's HTTP address (default: this page's origin). */
  http?: string;
  /** A fresh token for the signed-in user (production: from the ENT's session). */
  token?: () => Promise<string>;
  /** People the user may choose to write to (production: from the ENT's directory). */
  directory?: () => Promise<Person[]>;
}
declare global {
  interface Window {
    PREAU?: Config;
    preau?: PreauClient;
  }
}

const cfg: Config = window.PREAU ?? {};
const httpBase = (cfg.http ?? location.origin).replace(/\/$/, "");
const wsUrl = cfg.gateway ?? `${httpBase.replace(/^http/, "ws")}/ws`;
const main = document.getElementById("main")!;
const statusLine = document.getElementById("status")!;
const banner = document.getElementById("banner")!;
const live = document.getElementById("live")!;
const meLine = document.getElementById("me")!;


let client: PreauClient;
/** A fresh token for the signed-in user (recording links are asked over HTTP). */
let tokenOf: () => Promise<string> = () => Promise.reject(new Error("not signed in"));
let people: Person[] = [];
const logs = new Map<string, Log>();
let current: string | null = null;
let currentThread: number | null = null;
let paneError = "";
/** The channel the address names, even before the client knows it. */
let wanted: string | null = null;
/** Read receipts last fetched, per announcement (`channel#seq`). */
const receiptsOf = new Map<string, { read: string[]; total: number }>();

// ---- sign-in ----

async function start(): Promise<void> {
  if (cfg.token) return connect(cfg.token);
  // Development mode: choose a demo user (or `?user=` in the address).
  const wanted = new URLSearchParams(location.search).get("user") ?? sessionStorage.getItem("preau-user");
  if (wanted) return connect(() => devToken(wanted));
  let users: Person[];
  try {
    const r = await fetch(`${httpBase}/dev/users`);
    users = ((await r.json()) as { users: Person[] }).users;
  } catch {
    main.append(h("p", { class: "notice" }, "Le serveur de messagerie est injoignable."));
    return;
  }
  const select = h("select", { id: "signin-user", name: "user" });
  for (const profile of ["teacher", "parent", "pupil", "staff", "admin"]) {
    const group = h("optgroup", { label: profileLabel(profile, true) });
    for (const u of users.filter((x) => x.profile === profile)) group.append(h("option", { value: u.id }, `${u.name}`));
    if (group.children.length) select.append(group);
  }
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h2", { id: "signin-title" }, "Se connecter (mode démonstration)"),
    h("p", {}, "Choisissez un membre de l'établissement de démonstration."),
    h("label", { for: "signin-user" }, "Utilisateur"),
    select,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Se connecter")),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = (select as HTMLSelectElement).value;
    sessionStorage.setItem("preau-user", user);
    clear(main);
    void connect(() => devToken(user));
  });
  main.append(form);
  (select as HTMLSelectElement).focus();
}

async function devToken(user: string): Promise<string> {
  const r = await fetch(`${httpBase}/dev/token?user=${encodeURIComponent(user)}`);
  if (!r.ok) throw new Error(`token ${r.status}`);
  return ((await r.json()) as { token: string }).token;
}

async function connect(token: () => Promise<string>): Promise<void> {
  tokenOf = token;
  client = new PreauClient({
    url: wsUrl,
    token,
    outbox: {
      load: () => JSON.parse(localStorage.getItem("preau-outbox") ?? "[]"),
      save: (items) => localStorage.setItem("preau-outbox", JSON.stringify(items)),
    },
  });
  window.preau = client;
  client.on("status", (st, d) => {
    showStatus(st, d);
    if (current) renderPaneHeader();
  });
  client.on("channel", (c) => {
    renderList();
    // A conversation just opened here: its channel_added may come after the address.
    if (c.channel === wanted && c.channel !== current) route();
  });
  client.on("channelRemoved", (ch) => {
    logs.delete(ch);
    if (ch === current) closeChannel();
    renderList();
  });
  client.on("entry", onEntry);
  client.on("profiles", () => {
    renderList();
    renderPane();
  });
  client.on("typing", (ch) => ch === current && renderTyping());
  client.on("presence", () => current && renderPaneHeader());
  client.on("suspension", showSuspension);
  client.on("outbox", () => renderLog());
  client.on("sendFailed", (_item, e) => showPaneError(e));
  client.on("stopped", (reason) => {
    if (reason === "unauthorized") {
      banner.hidden = false;
      banner.textContent = "Votre session a expiré : reconnectez-vous depuis l'ENT.";
    } else if (reason === "removed") {
      banner.hidden = false;
      banner.textContent = "Votre compte n'a plus accès à la messagerie.";
    }
  });
  client.on("hello", async (hello) => {
    const open = current ? client.channel(current) : undefined;
    if (open && (open.kind === "direct" || open.kind === "group")) {
      client.members(open.channel).then(renderPaneHeader, () => undefined);
    }
    meLine.textContent = "";
    const mine = await client.profiles([hello.user]);
    meLine.textContent = mine[0] ? `${mine[0].name} · ${profileLabel(hello.profile)}` : profileLabel(hello.profile);
  });
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => current && markRead());
  try {
    await client.connect();
  } catch (e) {
    showStatus("stopped", { reason: String(e) });
    return;
  }
  people = await loadPeople();
  layout();
  route();
}

async function loadPeople(): Promise<Person[]> {
  try {
    if (cfg.directory) return await cfg.directory();
    const r = await fetch(`${httpBase}/dev/users`);
    if (!r.ok) return [];
    const me = client.hello;
    return ((await r.json()) as { users: Person[] }).users.filter((u) => u.id !== me?.user && u.school === me?.school);
  } catch {
    return [];
  }
}

// ---- status, banners ----

function showStatus(s: Status, d: { code?: number; reason?: string; retryInMs?: number } = {}): void {
  statusLine.dataset.state = s;
  statusLine.textContent =
    s === "online"
      ? "En ligne"
      : s === "connecting"
        ? "Connexion…"
        : s === "reconnecting"
          ? d.retryInMs && d.retryInMs >= 1000
            ? `Hors ligne · nouvelle tentative dans ${Math.round(d.retryInMs / 1000)} s`
            : "Reconnexion…"
          : "Déconnecté";
  document.body.dataset.status = s;
}

function showSuspension(): void {
  const s = client.suspension;
  if (!s) {
    banner.hidden = true;
    banner.textContent = "";
    return;
  }
  const who = s.scope === "platform" ? "sur toute la plateforme" : "dans votre établissement";
  banner.hidden = false;
  banner.textContent = `La messagerie est suspendue ${who} : ${s.reason}. La lecture reste possible.${
    s.announcements_open ? " La direction peut encore publier des annonces." : ""
  }`;
}

function showPaneError(e: unknown): void {
  if (e instanceof PreauError) {
    let text = frenchMessage(e.code);
    if ((e.code === "outside_hours" || e.code === "held" || e.code === "muted") && e.retryAfterMs) {
      const at = new Date(Date.now() + e.retryAfterMs);
      text += ` Possible à nouveau à ${at.toLocaleTimeString("fr-FR", { hour: "2-digit", minute: "2-digit" })}.`;
    }
    paneError = text;
  } else {
    paneError = frenchMessage("internal");
  }
  const el = document.getElementById("pane-error");
  if (el) el.textContent = paneError;
}

// ---- the channel list ----

function layout(): void {
  clear(main);
  const list = h("nav", { class: "list", id: "list", "aria-label": "Conversations" });
  const pane = h("section", { class: "pane", id: "pane", "aria-labelledby": "pane-title" });
  main.append(list, pane);
  renderList();
}

function sortedChannels(): { classes: ChannelState[]; convs: ChannelState[] } {
  const all = client.channels;
  const byTitle = (a: ChannelState, b: ChannelState) => a.title.localeCompare(b.title, "fr") || a.kind.localeCompare(b.kind);
  return {
    classes: all.filter((c) => c.kind === "forum" || c.kind === "announcements").sort(byTitle),
    convs: all.filter((c) => c.kind === "direct" || c.kind === "group").sort((a, b) => b.lastSeq - a.lastSeq || byTitle(a, b)),
  };
}

function renderList(): void {
  const list = document.getElementById("list");
  if (!list) return;
  const focused = document.activeElement?.getAttribute("data-channel");
  clear(list);
  const { classes, convs } = sortedChannels();
  const item = (c: ChannelState) => {
    const label = `${title(c)}${c.unread ? `, ${c.unread} non lu${c.unread > 1 ? "s" : ""}` : ""}`;
    const a = h(
      "a",
      { href: `#c=${encodeURIComponent(c.channel)}`, "data-channel": c.channel, "aria-label": label },
      c.kind === "direct" ? h("span", { class: `dot${online(c) ? " on" : ""}`, "aria-hidden": "true" }) : null,
      h("span", { class: "title" }, title(c)),
      c.unread ? h("span", { class: "badge", "aria-hidden": "true" }, String(c.unread)) : null,
    );
    if (c.channel === current) a.setAttribute("aria-current", "page");
    return h("li", {}, a);
  };
  const adult = ["teacher", "staff", "admin"].includes(client.hello?.profile ?? "");
  list.append(
    h("div", { class: "actions" }, button("Nouvelle conversation", openNewConversation, "quiet"), button("Nouveau groupe", openNewGroup, "quiet")),
    adult ? h("div", { class: "actions" }, h("a", { href: "#reports", class: "quiet-link" }, "Signalements à traiter")) : "",
    h("h2", {}, "Mes classes"),
    classes.length ? h("ul", {}, ...classes.map(item)) : h("p", { class: "notice" }, "Aucune classe."),
    h("h2", {}, "Conversations"),
    convs.length ? h("ul", {}, ...convs.map(item)) : h("p", { class: "notice" }, "Aucune conversation pour l'instant."),
  );
  if (focused) (list.querySelector(`[data-channel="${CSS.escape(focused)}"]`) as HTMLElement | null)?.focus();
}

function title(c: ChannelState): string {
  // The server names class channels already ("Forum 6e A", "Annonces 6e A").
  return c.title;
}

function otherOf(channel: string): string | undefined {
  const [, a, b] = channel.split(":");
  return a === client.user ? b : a;
}

function online(c: ChannelState): boolean {
  const other = otherOf(c.channel);
  return !!other && client.online(other) === true;
}

function name(user: string): string {
  if (user.startsWith("school:")) return "L'établissement";
  if (user === client.user) return "Moi";
  return client.nameOf(user) ?? people.find((p) => p.id === user)?.name ?? user;
}

// ---- routing ----

function route(): void {
  const p = new URLSearchParams(location.hash.slice(1));
  const ch = p.get("c");
  const t = p.get("t");
  wanted = ch;
  if (location.hash === "#reports") return void openReports();
  if (!ch || !client.channel(ch)) return closeChannel();
  const changed = ch !== current;
  current = ch;
  currentThread = t ? Number(t) : null;
  paneError = "";
  main.classList.add("open");
  renderList();
  if (changed) void openChannel(ch);
  else renderPane();
}

function closeChannel(): void {
  current = null;
  currentThread = null;
  main.classList.remove("open");
  const pane = document.getElementById("pane");
  if (pane) {
    clear(pane);
    pane.append(h("p", { class: "notice" }, "Choisissez une classe ou une conversation."));
  }
  renderList();
}

function logOf(ch: string): Log {
  let l = logs.get(ch);
  if (!l) logs.set(ch, (l = newLog()));
  return l;
}

async function openChannel(ch: string): Promise<void> {
  const log = logOf(ch);
  renderPane();
  if (!log.loaded) {
    try {
      const page = await client.history(ch, { limit: 100 });
      loadPage(log, page.entries);
      await client.profiles(page.entries.map((e) => e.author));
    } catch (e) {
      showPaneError(e);
    }
  }
  const c = client.channel(ch);
  if (c && (c.kind === "direct" || c.kind === "group")) await client.members(ch).catch(() => undefined);
  if (ch === current) {
    renderPane();
    markRead();
    (document.getElementById("pane-title") as HTMLElement | null)?.focus();
  }
}

function markRead(): void {
  if (!current || document.visibilityState !== "visible") return;
  const c = client.channel(current);
  if (c && c.unread > 0) client.markRead(current).catch(() => undefined);
}

// ---- entries ----

function onEntry(ch: string, e: Entry, isLive: boolean): void {
  const log = logs.get(ch);
  if (log) take(log, e);
  if (e.author !== client.user) void client.profiles([e.author]);
  if (isLive && e.author !== client.user && (e.kind === "message" || e.kind === "thread")) {
    const c = client.channel(ch);
    const where = ch === current ? "" : ` dans ${c ? title(c) : "une conversation"}`;
    live.textContent = `Nouveau message de ${name(e.author)}${where} : ${(e.body ?? "").slice(0, 140)}`;
  }
  if (ch === current) {
    // A thread's state (locked, pinned) changes the header's buttons and the composer.
    if (e.kind === "thread_state" || e.kind === "thread") renderPane();
    else renderLog();
    markRead();
  }
}

// ---- the open channel ----

function renderPane(): void {
  const pane = document.getElementById("pane");
  if (!pane || !current) return;
  const c = client.channel(current);
  if (!c) return;
  const draft = (document.getElementById("composer-text") as HTMLTextAreaElement | null)?.value ?? "";
  clear(pane);
  pane.append(
    h("header", { id: "pane-header" }),
    h("p", { class: "error", id: "pane-error", role: "alert" }, paneError),
    h("ul", { class: "log", id: "log", role: "log", "aria-label": `Messages · ${title(c)}` }),
    h("p", { class: "typing", id: "typing", "aria-live": "polite" }),
  );
  const composer = composerFor(c);
  if (composer) pane.append(composer);
  const text = document.getElementById("composer-text") as HTMLTextAreaElement | null;
  if (text) text.value = draft;
  renderPaneHeader();
  renderLog();
  renderTyping();
}

function renderPaneHeader(): void {
  const header = document.getElementById("pane-header");
  if (!header || !current) return;
  const c = client.channel(current)!;
  clear(header);
  let sub = kindLabel(c.kind);
  if (c.kind === "direct") sub = client.status !== "online" ? "" : online(c) ? "En ligne" : "Hors ligne";
  header.append(
    h("button", { class: "quiet back", type: "button", onclick: () => (location.hash = "") }, "← Retour"),
    h("div", { style: "flex:1 1 auto;min-width:0" }, h("h2", { id: "pane-title", tabindex: "-1" }, title(c)), h("p", { class: "sub" }, sub)),
  );
  if (c.kind === "group") {
    if (c.moderator) header.append(button("Ajouter des membres", () => openAddMembers(c.channel), "quiet"));
    header.append(
      button("Quitter le groupe", () =>
        confirmDialog(`Quitter le groupe « ${c.title} » ? Vous ne recevrez plus ses messages.`, "Quitter", async () => {
          await client.leave(c.channel);
          location.hash = "";
        }),
      "danger"),
    );
  }
  if (c.kind === "forum" && currentThread !== null) {
    const t = logOf(current).entries.get(currentThread);
    header.append(button("Tous les sujets", () => (location.hash = `c=${encodeURIComponent(current!)}`), "quiet"));
    if (t && c.moderator) {
      header.append(
        button(t.locked ? "Déverrouiller" : "Verrouiller", () => act(() => client.setThread(current!, t.seq, { locked: !t.locked }))),
        button(t.pinned ? "Désépingler" : "Épingler", () => act(() => client.setThread(current!, t.seq, { pinned: !t.pinned })), "quiet"),
      );
    }
  }
}

function renderTyping(): void {
  const el = document.getElementById("typing");
  if (!el || !current) return;
  const who = client.typingIn(current).map(name);
  el.textContent = who.length === 0 ? "" : who.length === 1 ? `${who[0]} écrit…` : `${who.join(", ")} écrivent…`;
}

function renderLog(): void {
  const ul = document.getElementById("log");
  if (!ul || !current) return;
  const c = client.channel(current)!;
  const log = logOf(current);
  const atBottom = ul.scrollHeight - ul.scrollTop - ul.clientHeight < 40;
  clear(ul);
  if (!log.loaded) {
    ul.append(h("li", { class: "notice" }, "Chargement…"));
    return;
  }
  const entries = [...log.entries.values()].sort((a, b) => a.seq - b.seq);
  if (c.kind === "forum") renderForum(ul, c, entries);
  else {
    // Messages and membership changes, in the log's order.
    for (const e of [...entries, ...log.notices].sort((a, b) => a.seq - b.seq)) {
      if (e.kind !== "membership") {
        ul.append(messageItem(c, e));
        continue;
      }
      const who = (e.members ?? []).map(name).join(", ");
      ul.append(h("li", { class: "notice" }, `${who} ${e.joined ? "a rejoint" : "a quitté"} le groupe · ${formatWhen(e.at)}`));
    }
    if (!entries.length) ul.append(h("li", { class: "notice" }, c.kind === "announcements" ? "Aucune annonce." : "Aucun message pour l'instant."));
  }
  // Sends still waiting for their acknowledgement (offline, or in flight).
  for (const item of client.outbox) {
    const cmd = item.command;
    if (cmd.type === "send" && cmd.channel === current && (c.kind !== "forum" || cmd.thread === currentThread)) {
      ul.append(h("li", { class: "msg mine pending" }, h("div", { class: "body" }, cmd.body), h("div", { class: "meta" }, "En attente d'envoi…")));
    }
  }
  // New messages show at the bottom; a reader who scrolled up to read older ones stays.
  if (atBottom || ul.dataset.channel !== current) ul.scrollTop = ul.scrollHeight;
  ul.dataset.channel = current;
}

/** A class recording listed in the announcements: its date and length, and a download
 * through a link the gateway signs for readers of the announcements. */
function recordingItem(c: ChannelState, e: Entry): HTMLElement {
  const rec = recordingOf(e);
  const secs = rec ? Math.round(rec.duration_ms / 1000) : 0;
  const length = secs < 60 ? `${secs} s` : `${Math.round(secs / 60)} min`;
  const size = rec ? (rec.size < 1e6 ? `${Math.max(1, Math.round(rec.size / 1e3))} ko` : `${Math.round(rec.size / 1e6)} Mo`) : "";
  const li = h(
    "li",
    { class: `msg recording${e.deleted ? " deleted" : ""}`, "data-seq": String(e.seq) },
    h("div", { class: "who" }, name(e.author)),
    h("div", { class: "body" }, rec ? `Enregistrement du cours · ${length} · ${size}` : "Enregistrement retiré"),
    h("time", { datetime: new Date(e.at).toISOString() }, formatWhen(e.at)),
  );
  if (!rec) return li;
  const tools = h("div", { class: "tools" });
  tools.append(
    button("Télécharger", async () => {
      try {
        const link = await recordingLink(httpBase, await tokenOf(), c.channel, e.seq);
        location.assign(link.url);
      } catch (err) {
        showPaneError(err instanceof HttpError ? new PreauError(err.code as PreauError["code"], err.message) : err);
      }
    }, "", `Télécharger l'enregistrement du ${formatWhen(e.at)}`),
  );
  if (e.author === client.user || c.moderator) tools.append(button("Supprimer", () => act(() => client.delete(c.channel, e.seq)), "danger", "Supprimer l'enregistrement"));
  li.append(tools);
  return li;
}

function messageItem(c: ChannelState, e: Entry): HTMLElement {
  if (e.kind === "recording") return recordingItem(c, e);
  const mine = e.author === client.user;
  const li = h(
    "li",
    { class: `msg${mine ? " mine" : ""}${e.deleted ? " deleted" : ""}`, "data-seq": String(e.seq) },
    h("div", { class: "who" }, name(e.author)),
    h("div", { class: "body" }, e.deleted ? "Message supprimé" : (e.body ?? "")),
    h("time", { datetime: new Date(e.at).toISOString() }, formatWhen(e.at) + (e.edited ? " · modifié" : "")),
  );
  const tools = h("div", { class: "tools" });
  if (!mine && !e.deleted && !e.author.startsWith("school:")) {
    tools.append(button("Signaler", () => openReport(c.channel, e), "quiet", `Signaler le message de ${name(e.author)}`));
  }
  if (!e.deleted && (mine || c.moderator)) tools.append(button("Supprimer", () => act(() => client.delete(c.channel, e.seq)), "danger", `Supprimer le message de ${name(e.author)}`));
  if (c.kind === "announcements" && mine && !e.deleted) {
    tools.append(
      button("Qui a lu ?", async () => {
        try {
          const receipts = await client.receipts(c.channel, e.seq);
          await client.profiles(receipts.map((r) => r.user));
          receiptsOf.set(`${c.channel}#${e.seq}`, { read: receipts.filter((r) => r.read).map((r) => r.user), total: receipts.length });
          renderLog();
        } catch (err) {
          showPaneError(err);
        }
      }, "quiet"),
    );
    li.append(tools);
    const r = receiptsOf.get(`${c.channel}#${e.seq}`);
    if (r) {
      li.append(
        h("p", { class: "meta", role: "status" }, `Lu par ${r.read.length} sur ${r.total}`),
        h("ul", { class: "receipts" }, ...r.read.map((u) => h("li", {}, name(u)))),
      );
    }
    return li;
  }
  if (c.kind === "forum" && c.moderator && !mine && !e.deleted && people.find((p) => p.id === e.author)?.profile !== "teacher") {
    tools.append(button("Sourdine 1 h", () => act(() => client.mute(c.channel, e.author, 60)), "quiet", `Retirer la parole à ${name(e.author)} pendant une heure`));
  }
  if (tools.children.length) li.append(tools);
  return li;
}

function renderForum(ul: HTMLElement, c: ChannelState, entries: Entry[]): void {
  const threads = entries.filter((e) => e.kind === "thread");
  if (currentThread === null) {
    const lastOf = (t: Entry) => Math.max(t.seq, ...entries.filter((e) => e.thread === t.seq).map((e) => e.seq));
    threads.sort((a, b) => Number(!!b.pinned) - Number(!!a.pinned) || lastOf(b) - lastOf(a));
    if (!threads.length) ul.append(h("li", { class: "notice" }, "Aucun sujet pour l'instant."));
    for (const t of threads) {
      const replies = entries.filter((e) => e.thread === t.seq && e.kind === "message").length;
      const state = [t.pinned ? "épinglé" : "", t.locked ? "verrouillé" : ""].filter(Boolean).join(", ");
      ul.append(
        h(
          "li",
          { class: "thread" },
          h("h3", {}, t.pinned ? icon("pin") : null, t.locked ? icon("lock") : null, h("a", { href: `#c=${encodeURIComponent(c.channel)}&t=${t.seq}` }, t.title ?? "")),
          h("p", { class: "sub" }, `${name(t.author)} · ${formatWhen(t.at)} · ${replies} réponse${replies > 1 ? "s" : ""}${state ? ` · ${state}` : ""}`),
        ),
      );
    }
    return;
  }
  const t = entries.find((e) => e.seq === currentThread && e.kind === "thread");
  if (!t) {
    ul.append(h("li", { class: "notice" }, "Ce sujet n'existe plus."));
    return;
  }
  ul.append(
    h("li", { class: "thread" }, h("h3", {}, t.locked ? icon("lock") : null, t.title ?? ""), h("p", { class: "sub" }, t.locked ? "Sujet verrouillé : plus de réponses." : "Sujet ouvert.")),
    messageItem(c, t),
  );
  for (const e of entries.filter((x) => x.thread === t.seq)) ul.append(messageItem(c, e));
}

function composerFor(c: ChannelState): HTMLElement | null {
  if (c.kind === "forum" && currentThread === null) {
    const canOpen = ["teacher", "staff", "admin"].includes(client.hello?.profile ?? "");
    if (!canOpen) return null;
    const form = h(
      "form",
      { class: "composer", style: "flex-wrap:wrap" },
      h("div", { class: "field", style: "flex-basis:100%" }, h("label", { for: "thread-title" }, "Titre du nouveau sujet"), h("input", { id: "thread-title", maxlength: "200", required: "" })),
      h("div", { class: "field" }, h("label", { for: "composer-text" }, "Premier message"), h("textarea", { id: "composer-text", rows: "2", required: "" })),
      h("button", { type: "submit" }, "Créer le sujet"),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const titleEl = document.getElementById("thread-title") as HTMLInputElement;
      const text = document.getElementById("composer-text") as HTMLTextAreaElement;
      const [tt, body] = [titleEl.value.trim(), text.value.trim()];
      if (!tt || !body) return;
      titleEl.value = "";
      text.value = "";
      act(async () => {
        const seq = await client.createThread(c.channel, tt, body);
        location.hash = `c=${encodeURIComponent(c.channel)}&t=${seq}`;
      });
    });
    return form;
  }
  const thread = c.kind === "forum" && currentThread !== null ? logOf(c.channel).entries.get(currentThread) : undefined;
  if (thread?.locked && !c.moderator) {
    return h("p", { class: "notice" }, "Ce sujet est verrouillé : vous ne pouvez plus y répondre.");
  }
  if (!c.canPost) {
    return h("p", { class: "notice" }, c.kind === "announcements" ? "Les annonces sont publiées par l'équipe de la classe." : "Vous ne pouvez pas écrire ici.");
  }
  const label = c.kind === "announcements" ? "Nouvelle annonce" : c.kind === "forum" ? "Votre réponse" : "Votre message";
  const text = h("textarea", { id: "composer-text", rows: "1", maxlength: String(client.hello?.limits.max_body_bytes ?? 8192) }) as HTMLTextAreaElement;
  const form = h(
    "form",
    { class: "composer" },
    h("div", { class: "field" }, h("label", { for: "composer-text" }, label), text),
    h("button", { type: "submit" }, c.kind === "announcements" ? "Publier" : "Envoyer"),
  ) as HTMLFormElement;
  text.addEventListener("input", () => (c.kind === "direct" || c.kind === "group") && client.typing(c.channel));
  text.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = text.value.trim();
    if (!body) return;
    text.value = "";
    paneError = "";
    document.getElementById("pane-error")!.textContent = "";
    // Sent now or when the connection is back (the outbox keeps it meanwhile).
    client.sendMessage(c.channel, body, { thread: c.kind === "forum" ? (currentThread ?? undefined) : undefined }).catch(showPaneError);
    renderLog();
  });
  return form;
}

function act(f: () => Promise<unknown>): void {
  paneError = "";
  const el = document.getElementById("pane-error");
  if (el) el.textContent = "";
  f().then(() => renderPane(), showPaneError);
}

// ---- new conversations ----

function openNewConversation(): void {
  const select = h("select", { id: "new-person", required: "" });
  personOptions(select, people);
  dialog("Nouvelle conversation", [h("label", { for: "new-person" }, "Avec"), select], "Ouvrir", async () => {
    const ch = await client.openDirect((select as HTMLSelectElement).value);
    location.hash = `c=${encodeURIComponent(ch)}`;
  });
}

function openNewGroup(): void {
  const nameInput = h("input", { id: "group-name", required: "", maxlength: "200" });
  const select = h("select", { id: "group-members", multiple: "", size: "8", required: "" });
  personOptions(select, people);
  dialog(
    "Nouveau groupe",
    [h("label", { for: "group-name" }, "Nom du groupe"), nameInput, h("label", { for: "group-members" }, "Membres (plusieurs choix possibles)"), select],
    "Créer",
    async () => {
      const members = [...(select as HTMLSelectElement).selectedOptions].map((o) => o.value);
      const ch = await client.createGroup((nameInput as HTMLInputElement).value.trim(), members);
      location.hash = `c=${encodeURIComponent(ch)}`;
    },
  );
}

// ---- reports (signalements) and their queue ----

function openReport(channel: string, e: Entry): void {
  const reason = h("textarea", { id: "report-reason", rows: "3", maxlength: "500", required: "" }) as HTMLTextAreaElement;
  dialog(
    "Signaler un message",
    [
      h("p", {}, `Message de ${name(e.author)} : « ${(e.body ?? "").slice(0, 200)} »`),
      h("p", { class: "sub" }, "L'équipe de l'établissement recevra votre signalement et le message tel qu'il est maintenant."),
      h("label", { for: "report-reason" }, "Pourquoi le signalez-vous ?"),
      reason,
    ],
    "Envoyer le signalement",
    async () => {
      await client.report(channel, e.seq, reason.value.trim());
      live.textContent = "Signalement envoyé à l'équipe de l'établissement.";
      paneError = "";
      const el = document.getElementById("pane-error");
      if (el) el.textContent = "Signalement envoyé à l'équipe de l'établissement.";
    },
  );
}

async function openReports(): Promise<void> {
  current = null;
  currentThread = null;
  main.classList.add("open");
  renderList();
  const pane = document.getElementById("pane");
  if (!pane) return;
  clear(pane);
  const ul = h("ul", { class: "log", id: "reports", "aria-label": "Signalements à traiter" });
  pane.append(
    h(
      "header",
      {},
      h("button", { class: "quiet back", type: "button", onclick: () => (location.hash = "") }, "← Retour"),
      h("h2", { id: "pane-title", tabindex: "-1" }, "Signalements à traiter"),
    ),
    h("p", { class: "error", id: "pane-error", role: "alert" }),
    ul,
  );
  try {
    const reports = await client.reports();
    await client.profiles(reports.flatMap((r) => [r.author, r.reporter]));
    if (!reports.length) ul.append(h("li", { class: "notice" }, "Aucun signalement en attente."));
    for (const r of reports) {
      const where = client.channel(r.channel)?.title ?? r.channel;
      const li = h(
        "li",
        { class: "msg" },
        h("div", { class: "who" }, `${name(r.author)} · ${where}`),
        h("div", { class: "body" }, r.content),
        h("div", { class: "meta" }, `Signalé par ${name(r.reporter)} le ${formatWhen(r.at_ms)} : ${r.reason}`),
        h(
          "div",
          { class: "tools" },
          button("Supprimer le message", () => act(async () => { await client.closeReport(r.id, "delete"); await openReports(); }), "danger"),
          button("Garder le message", () => act(async () => { await client.closeReport(r.id, "dismiss"); await openReports(); }), "quiet"),
        ),
      );
      ul.append(li);
    }
  } catch (e) {
    showPaneError(e);
  }
  (document.getElementById("pane-title") as HTMLElement | null)?.focus();
}

// ---- groups ----

function openAddMembers(channel: string): void {
  const select = h("select", { id: "add-members", multiple: "", size: "8", required: "" });
  personOptions(select, people);
  dialog("Ajouter des membres", [h("label", { for: "add-members" }, "Personnes (plusieurs choix possibles)"), select], "Ajouter", async () => {
    await client.addMembers(channel, [...(select as HTMLSelectElement).selectedOptions].map((o) => o.value));
    await client.members(channel);
  });
}


document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && (current || location.hash === "#reports") && !document.querySelector("dialog[open]")) location.hash = "";
});

void start();
