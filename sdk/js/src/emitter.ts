// A small typed event emitter (no dependency): `on` returns the function that unsubscribes.

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Listener = (...args: any[]) => void;

export class Emitter<E extends { [K in keyof E]: Listener }> {
  private listeners = new Map<keyof E, Set<Listener>>();

  /** Calls `fn` on every `event`; returns the unsubscribe function. */
  on<K extends keyof E>(event: K, fn: E[K]): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set!.delete(fn);
  }

  protected emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    for (const fn of [...(this.listeners.get(event) ?? [])]) {
      try {
        fn(...args);
      } catch (e) {
        // A listener's fault must not stop the client; the page's console shows it.
        console.error(`@preau/client: a "${String(event)}" listener threw`, e);
      }
    }
  }
}
