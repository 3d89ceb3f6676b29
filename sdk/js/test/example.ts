// The README's example, type-checked (tsconfig.app.json); a unit test keeps the two equal.
export {};
import { PreauClient, frenchMessage, PreauError } from "../src/index.js";

const client = new PreauClient({
  url: "wss://messagerie.ent.example.fr/ws",
  // Called again whenever the gateway asks for a new token (close 4001).
  token: async () => (await fetch("/ent/jeton-preau", { credentials: "include" })).text(),
  outbox: {
    load: () => JSON.parse(localStorage.getItem("outbox") ?? "[]"),
    save: (items) => localStorage.setItem("outbox", JSON.stringify(items)),
  },
});
client.on("status", (s) => console.log(s)); // connecting, online, reconnecting, stopped
client.on("entry", (channel, entry) => console.log(channel, entry.seq, entry.author, entry.body));
client.on("channel", (c) => console.log(c.title, `${c.unread} non lus`));

const hello = await client.connect();
console.log(`connecté : ${hello.user}`);
const dm = await client.openDirect("t01");
try {
  const { seq } = await client.sendMessage(dm, "Bonjour Madame, Léa sera absente demain.");
  await client.markRead(dm, seq);
} catch (e) {
  if (e instanceof PreauError) alert(frenchMessage(e.code)); // "Les règles de l'établissement…"
}
