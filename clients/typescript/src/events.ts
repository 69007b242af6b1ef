/**
 * A small typed event emitter that works the same in browsers and Node (no dependency on either's).
 * @module
 */

/** Unsubscribes a listener. */
export type Unsubscribe = () => void;

/** Emits events of the map `Events` (event name → argument type). */
export class Emitter<Events extends { [name: string]: unknown }> {
  private readonly listeners = new Map<keyof Events, Set<(value: never) => void>>();

  /** Calls `listener` on every `event` until the returned function is called. */
  on<E extends keyof Events>(event: E, listener: (value: Events[E]) => void): Unsubscribe {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as (value: never) => void);
    return () => set.delete(listener as (value: never) => void);
  }

  /** Resolves with the next `event`. */
  once<E extends keyof Events>(event: E): Promise<Events[E]> {
    return new Promise((resolve) => {
      const off = this.on(event, (value) => {
        off();
        resolve(value);
      });
    });
  }

  /** Calls every listener of `event`; a throwing listener does not stop the others. */
  protected emit<E extends keyof Events>(event: E, value: Events[E]): void {
    for (const listener of [...(this.listeners.get(event) ?? [])]) {
      try {
        (listener as (value: Events[E]) => void)(value);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
