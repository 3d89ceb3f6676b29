// The package's size as a front end ships it: the SDK with its MessagePack codec, bundled
// and minified, then gzipped. Printed for the closing note; fails past a budget.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = join(dirname(fileURLToPath(import.meta.url)), "..");
const BUDGET = 20 * 1024;
const r = await build({
  entryPoints: [join(here, "src", "index.ts")],
  bundle: true,
  format: "esm",
  minify: true,
  write: false,
  target: ["es2022"],
  legalComments: "none",
});
const code = r.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 }).length;
console.log(`@preau/client: ${code.length} bytes minified, ${gz} bytes minified + gzip (with @msgpack/msgpack)`);
if (gz > BUDGET) {
  console.error(`over the ${BUDGET}-byte budget`);
  process.exit(1);
}
