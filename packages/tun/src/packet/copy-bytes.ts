/**
 * Copies `length` bytes from source[sourceAt] to target[targetAt] (the
 * ranges may overlap). When both arrays view the same ArrayBuffer or
 * SharedArrayBuffer — packet slots carved from one pool — it is one
 * `copyWithin` on a view of that whole buffer, kept for the last buffer
 * seen, so nothing is allocated per call while one pool is in use. Arrays over different buffers fall back to
 * `set` over a temporary subarray.
 */
export function copyBytes(
  source: Uint8Array,
  sourceAt: number,
  target: Uint8Array,
  targetAt: number,
  length: number,
): void {
  if (source.buffer === target.buffer) {
    const whole = wholeBufferView(source.buffer);
    const from = source.byteOffset + sourceAt;
    whole.copyWithin(target.byteOffset + targetAt, from, from + length);
  } else if (length <= SMALL_COPY) {
    for (let i = 0; i < length; i++) target[targetAt + i] = source[sourceAt + i]!;
  } else {
    target.set(source.subarray(sourceAt, sourceAt + length), targetAt);
  }
}

// Below this, a byte loop costs less than creating a subarray.
const SMALL_COPY = 64;

let cachedBuffer: ArrayBufferLike | null = null;
let cachedView: Uint8Array = new Uint8Array(0);

function wholeBufferView(buffer: ArrayBufferLike): Uint8Array {
  if (cachedBuffer !== buffer) {
    cachedBuffer = buffer;
    cachedView = new Uint8Array(buffer);
  }
  return cachedView;
}
