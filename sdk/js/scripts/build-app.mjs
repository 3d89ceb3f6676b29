// Builds the messaging web app (app/) into static files: app/dist/{index.html, app.js,
// app.css, config.js, preau-client.js (the SDK alone, for the classroom page's chat)}, the SDK and its MessagePack codec bundled in app.js. The gateway
// serves the same files at `/` in development mode from gateway/static/app/, kept equal
// to the build: `--check` fails when they differ (CI), otherwise they are rewritten.
import { build } from "esbuild";
import { mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(here, "app", "dist");
const served = join(here, "..", "..", "gateway", "static", "app");
mkdirSync(dist, { recursive: true });
const bundle = (entry) =>
  build({ entryPoints: [entry], bundle: true, format: "esm", minify: true, target: ["es2022"], write: false, legalComments: "none" });
const result = await bundle(join(here, "app", "src", "main.ts"));
// The SDK alone, as one ES module the classroom page imports for its chat.
const sdk = await bundle(join(here, "src", "index.ts"));
const files = {
  "app.js": result.outputFiles[0].text,
  "preau-client.js": sdk.outputFiles[0].text,
  "index.html": readFileSync(join(here, "app", "index.html"), "utf8"),
  "app.css": readFileSync(join(here, "app", "app.css"), "utf8"),
  "config.js": readFileSync(join(here, "app", "config.js"), "utf8"),
};
for (const [name, text] of Object.entries(files)) writeFileSync(join(dist, name), text);

const check = process.argv.includes("--check");
const stale = [];
mkdirSync(served, { recursive: true });
for (const [name, text] of Object.entries(files)) {
  const path = join(served, name);
  if (check) {
    if (!existsSync(path) || readFileSync(path, "utf8") !== text) stale.push(name);
  } else {
    writeFileSync(path, text);
  }
}
if (stale.length) {
  console.error(`gateway/static/app/{${stale.join(",")}} differ from the app's build: run \`npm run build\` in sdk/js and commit`);
  process.exit(1);
}
