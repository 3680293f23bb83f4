/**
 * Raw addresses of JavaScript memory for native calls.
 *
 * koffi converts a Buffer argument in ~40 ns but an integer in ~5 ns, so
 * pointer parameters are `uintptr_t` and callers pass plain numbers. The
 * backing store of an (Shared)ArrayBuffer does not move once it has been
 * handed out (V8 moves on-heap typed-array data off-heap the first time its
 * buffer is exposed), so its base address is looked up once and cached.
 * The memory must stay alive while native code uses the address: an
 * optimizing compiler treats a view as dead once its last JavaScript use
 * (taking its address) is behind it, so a GC at any later allocation may
 * free it. Views a long-lived object holds are safe; a one-shot call
 * sequence over its own views runs inside `keepingReachable`. x86-64 and
 * arm64 user-space addresses fit in 2^53.
 */
import koffi from 'koffi';

/** Address of the view's first byte. */
export function addressOf(view: ArrayBufferView): number {
  return baseAddress(view.buffer) + view.byteOffset;
}

/** Address of `view[offset]`, after checking that `length` bytes from there lie inside `view`. */
export function addressInView(view: Uint8Array, offset: number, length: number): number {
  if (!isIndex(offset) || !isIndex(length) || offset + length > view.length) {
    throw new RangeError(
      `range [${offset}, ${offset}+${length}) does not fit in a view of ${view.length} bytes`,
    );
  }
  return baseAddress(view.buffer) + view.byteOffset + offset;
}

/** Views native calls in progress use, reachable from here until those calls return. */
const inUse: (readonly ArrayBufferView[])[] = [];

/** Runs `call` (native calls on addresses of `views`) with `views` kept reachable until it returns. */
export function keepingReachable<T>(views: readonly ArrayBufferView[], call: () => T): T {
  inUse.push(views);
  try {
    return call();
  } finally {
    inUse.pop();
  }
}

let lastBuffer: ArrayBufferLike | undefined;
let lastBase = 0;
const baseAddresses = new WeakMap<ArrayBufferLike, number>();

function baseAddress(buffer: ArrayBufferLike): number {
  // Data paths reuse one slot buffer: a one-entry cache skips the WeakMap.
  if (buffer === lastBuffer) return lastBase;
  let base = baseAddresses.get(buffer);
  if (base === undefined) {
    base = buffer.byteLength === 0 ? 0 : Number(koffi.address(new Uint8Array(buffer)));
    baseAddresses.set(buffer, base);
  }
  lastBuffer = buffer;
  lastBase = base;
  return base;
}

function isIndex(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}
