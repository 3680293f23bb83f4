/**
 * Addresses of JavaScript memory handed to the kernel. V8 pins an
 * ArrayBuffer's backing store once its address is taken, so a buffer's base
 * address is looked up once; callers keep the buffer referenced while the
 * kernel uses it. x86-64 and arm64 user-space addresses fit in 2^53.
 */
import koffi from 'koffi';

const baseAddresses = new WeakMap<ArrayBufferLike, number>();

export function addressOf(view: ArrayBufferView): number {
  let base = baseAddresses.get(view.buffer);
  if (base === undefined) {
    base = Number(koffi.address(new Uint8Array(view.buffer)));
    baseAddresses.set(view.buffer, base);
  }
  return base + view.byteOffset;
}
