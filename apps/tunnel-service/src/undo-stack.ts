/**
 * What start-up did, as steps to undo it: run newest first, each once, and
 * one failing step does not keep the others from running.
 */

export class UndoStack {
  readonly #steps: Array<{ name: string; undo: () => Promise<void> | void }> = [];

  push(name: string, undo: () => Promise<void> | void): void {
    this.#steps.push({ name, undo });
  }

  /** Resolves with the steps that failed, so the caller can report them all. */
  async unwind(): Promise<Array<{ name: string; error: unknown }>> {
    const failures: Array<{ name: string; error: unknown }> = [];
    for (let step = this.#steps.pop(); step !== undefined; step = this.#steps.pop()) {
      try {
        await step.undo();
      } catch (error) {
        failures.push({ name: step.name, error });
      }
    }
    return failures;
  }
}
