/** One sleeper woken by whoever has something for it; a wake with nobody asleep is dropped. */
export class Wakeup {
  #wake: (() => void) | undefined;

  wake(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  sleep(): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
    });
  }
}
