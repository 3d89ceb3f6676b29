// The browser run's setup: the binaries (as for the conformance tests), and a clean
// screenshots folder, so what it holds is this run's steps only.
import { rmSync } from "node:fs";
import build from "../setup.js";
import { shots } from "./browser.js";

export default async function setup(): Promise<void> {
  rmSync(shots, { recursive: true, force: true });
  await build();
}
