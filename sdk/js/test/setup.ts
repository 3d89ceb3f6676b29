// Builds the gateway and the SFU once, before any test file runs (a first build takes minutes, which
// must not count against a test's time), and hands its path to the tests.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export default async function setup(): Promise<void> {
  if (process.env.PREAU_GATEWAY_BIN && process.env.PREAU_SFU_BIN) return;
  const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
  const code = await new Promise<number | null>((resolve) => {
    const c = spawn("cargo", ["build", "--quiet", "--locked", "-p", "preau-gateway", "-p", "preau-sfu", "--bin", "preau-gateway", "--bin", "preau-sfu"], {
      cwd: root,
      stdio: ["ignore", "inherit", "inherit"],
    });
    c.on("exit", resolve);
  });
  if (code !== 0) throw new Error("cargo build of preau-gateway and preau-sfu failed");
  process.env.PREAU_GATEWAY_BIN = join(root, "target", "debug", "preau-gateway");
  process.env.PREAU_SFU_BIN = join(root, "target", "debug", "preau-sfu");
}
