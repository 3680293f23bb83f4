/**
 * SIGUSR1 asks the gateway for its status line. Until a JavaScript listener
 * is installed, Node answers SIGUSR1 by opening its inspector on
 * 127.0.0.1:9229 — a root process any local user could then drive. So the
 * listener is installed when this module is evaluated: cli.ts imports it
 * first, and a launcher that preloads it (`node --import …/status-signal.ts`)
 * closes the window while the rest of the program loads. (Node 22's
 * --disable-sigusr1 closes the inspector but keeps listeners from hearing
 * the signal too.)
 */

let handler: () => void = () => {};

process.on('SIGUSR1', () => handler());

/** What SIGUSR1 does from now on; a no-op until set. */
export function onStatusSignal(next: () => void): void {
  handler = next;
}
