/**
 * A small typed event emitter that works the same in browsers and Node (no dependency on either's).
 * @module
 */
/** Emits events of the map `Events` (event name → argument type). */
export class Emitter {
    listeners = new Map();
    /** Calls `listener` on every `event` until the returned function is called. */
    on(event, listener) {
        let set = this.listeners.get(event);
        if (set === undefined) {
            set = new Set();
            this.listeners.set(event, set);
        }
        set.add(listener);
        return () => set.delete(listener);
    }
    /** Resolves with the next `event`. */
    once(event) {
        return new Promise((resolve) => {
            const off = this.on(event, (value) => {
                off();
                resolve(value);
            });
        });
    }
    /** Calls every listener of `event`; a throwing listener does not stop the others. */
    emit(event, value) {
        for (const listener of [...(this.listeners.get(event) ?? [])]) {
            try {
                listener(value);
            }
            catch (err) {
                queueMicrotask(() => {
                    throw err;
                });
            }
        }
    }
}
