// Reconnect delays, without IO: "full jitter" exponential backoff, so a storm of clients
// cut at once spreads its reconnects over the whole window instead of coming back in
// waves.

/** Backoff settings. */
export interface BackoffOptions {
  /** First window, in ms (default 500). */
  baseMs?: number;
  /** Largest window, in ms (default 30 000). */
  maxMs?: number;
}

/** The delay before reconnect attempt `attempt` (0 for the first), given a random number
 * in [0, 1). */
export function backoffDelay(attempt: number, random: number, opts: BackoffOptions = {}): number {
  const base = opts.baseMs ?? 500;
  const max = opts.maxMs ?? 30_000;
  const window = Math.min(max, base * 2 ** Math.min(attempt, 20));
  return Math.max(100, Math.floor(random * window));
}
