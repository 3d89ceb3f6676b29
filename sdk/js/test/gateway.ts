// Starts the real gateway binary for the conformance tests: a private data folder, a
// loopback port, development mode (the demo school, /dev/token). Nothing here is a mock.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { PreauClient, type ClientOptions, type WebSocketConstructor } from "../src/index.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** The gateway binary: $PREAU_GATEWAY_BIN, or the workspace's debug build (built if
 * missing or stale: cargo decides, in seconds when it is up to date). */
export function gatewayBinary(): string {
  if (process.env.PREAU_GATEWAY_BIN) return process.env.PREAU_GATEWAY_BIN;
  const r = spawnSync("cargo", ["build", "--quiet", "--locked", "-p", "preau-gateway", "--bin", "preau-gateway"], {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (r.status !== 0) throw new Error("cargo build of preau-gateway failed");
  const bin = join(root, "target", "debug", "preau-gateway");
  if (!existsSync(bin)) throw new Error(`no gateway binary at ${bin}`);
  return bin;
}

export class Gateway {
  private child: ChildProcess | null = null;
  readonly dir: string;
  port = 0;

  private constructor(
    private readonly bin: string,
    private readonly args: string[],
  ) {
    this.dir = mkdtempSync(join(tmpdir(), "preau-sdk-"));
  }

  /** Starts a gateway on a free loopback port. */
  static async start(args: string[] = []): Promise<Gateway> {
    const g = new Gateway(gatewayBinary(), args);
    await g.spawn("127.0.0.1:0");
    return g;
  }

  get http(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  get ws(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  private spawn(listen: string): Promise<void> {
    const child = spawn(this.bin, ["--listen", listen, "--data-dir", join(this.dir, "data"), ...this.args], {
      env: { ...process.env, PREAU_LOG: "warn" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    this.child = child;
    return new Promise((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      const fail = (code: number | null) => reject(new Error(`gateway exited (${code}) before listening`));
      child.once("exit", fail);
      lines.once("line", (line) => {
        child.off("exit", fail);
        const m = /:\/\/[^\s]*:(\d+)/.exec(line);
        if (!m) return reject(new Error(`no address in ${line}`));
        this.port = Number(m[1]);
        resolve();
      });
    });
  }

  /** SIGKILL, as a crash would. */
  async kill9(): Promise<void> {
    await this.signal("SIGKILL");
  }

  /** SIGTERM: the gateway drains (sessions get `reconnect`) and exits. */
  async term(): Promise<void> {
    await this.signal("SIGTERM");
  }

  private signal(sig: NodeJS.Signals): Promise<void> {
    const c = this.child;
    this.child = null;
    if (!c || c.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      c.once("exit", () => resolve());
      c.kill(sig);
    });
  }

  /** SIGSTOP or SIGCONT: a frozen node keeps its sockets open and answers nothing, as a
   * dead network path looks to a phone. */
  freeze(frozen: boolean): void {
    this.child?.kill(frozen ? "SIGSTOP" : "SIGCONT");
  }

  /** Starts again on the same port and data folder. */
  async restart(): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await this.spawn(`127.0.0.1:${this.port}`);
        return;
      } catch (e) {
        if (i >= 20) throw e;
        await sleep(250);
      }
    }
  }

  async stop(): Promise<void> {
    await this.kill9();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A development token for a demo user. */
  async token(user: string): Promise<string> {
    const r = await fetch(`${this.http}/dev/token?user=${user}`);
    if (!r.ok) throw new Error(`no token for ${user}: ${r.status}`);
    return ((await r.json()) as { token: string }).token;
  }

  /** A client of a demo user, with fresh tokens from /dev/token. */
  client(user: string, opts: Partial<ClientOptions> = {}): PreauClient {
    return new PreauClient({
      url: this.ws,
      token: () => this.token(user),
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      backoff: { baseMs: 200, maxMs: 2000 },
      ...opts,
    });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until `cond()` holds (polling), or fails after `ms`. */
export async function until(cond: () => boolean, ms = 15_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export const SCHOOL = "0750001A";
export const FORUM_6A = `forum:${SCHOOL}:6A`;
export const ANN_6A = `ann:${SCHOOL}:6A`;

/** A free loopback TCP port (for a server that must be named before it starts). */
export async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** A live-class SFU node on `port`, checking room tokens with the gateway's development
 * key (the gateway must have started), recording into the gateway's temporary folder;
 * `extra` flags after. */
export class Sfu {
  private constructor(private readonly child: ChildProcess) {}

  static async start(gw: Gateway, port: number, extra: string[] = []): Promise<Sfu> {
    const bin = process.env.PREAU_SFU_BIN ?? join(root, "target", "debug", "preau-sfu");
    const key = join(gw.dir, "data", "dev-signing-key");
    const args = ["--listen", `127.0.0.1:${port}`, "--udp", "127.0.0.1:0", "--room-key-file", key];
    args.push("--recordings-dir", join(gw.dir, "recordings"), ...extra);
    const child = spawn(bin, args, {
      env: { ...process.env, PREAU_LOG: "warn" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve, reject) => {
      child.once("exit", (c) => reject(new Error(`preau-sfu exited (${c})`)));
      createInterface({ input: child.stdout! }).once("line", () => resolve());
    });
    return new Sfu(child);
  }

  stop(): Promise<void> {
    if (this.child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      this.child.once("exit", () => resolve());
      this.child.kill("SIGKILL");
    });
  }
}
