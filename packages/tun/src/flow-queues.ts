/**
 * Which queue each flow lives on, from the consumer's side.
 *
 * The kernel sends a flow's reads to the queue that last wrote that flow
 * (TUN's automatic queue selection learns from writes), and otherwise to a
 * queue chosen by its own keyed hash, which we cannot compute. So a flow
 * first seen on a read is written back on the queue it was read from, and a
 * flow first seen on a write goes to `flowHash % queues`; either way the
 * kernel's choice and ours agree from then on and both directions of the
 * flow stay with one worker.
 *
 * An entry never changes queue while it lives, so a flow's writes always
 * use one queue (one thread, one FIFO). An entry is only evicted when its
 * queue has written everything sent through it and it was not used since
 * the previous sweep, so no write of that flow can still be in flight.
 *
 * Keys are the flow hash (symmetric: a packet and its reply share it);
 * flows whose hashes collide share an entry, which only means they share a
 * queue. Open addressing in typed arrays: no allocation per packet.
 */
export class FlowQueues {
  private capacity: number;
  private keys: Uint32Array;
  private queues: Uint16Array;
  /** Tx ring position just past the entry's last write, valid when `written` is 1. */
  private positions: Int32Array;
  private written: Uint8Array;
  private lastUsed: Uint32Array;
  private size = 0;
  private epoch = 1;

  constructor(initialCapacity = 4096) {
    this.capacity = initialCapacity;
    this.keys = new Uint32Array(initialCapacity);
    this.queues = new Uint16Array(initialCapacity);
    this.positions = new Int32Array(initialCapacity);
    this.written = new Uint8Array(initialCapacity);
    this.lastUsed = new Uint32Array(initialCapacity);
  }

  get flows(): number {
    return this.size;
  }

  /** Records the queue a flow was read from, unless the flow already has one. Hash 0 is ignored. */
  learn(hash: number, queue: number, drained: (queue: number, position: number) => boolean): void {
    if (hash === 0) return;
    const index = this.find(hash, drained);
    if (this.keys[index] === 0) this.insert(index, hash, queue);
    this.lastUsed[index] = this.epoch;
  }

  /** The queue to write a flow on, assigning `fallback` to a new flow. */
  queueFor(
    hash: number,
    fallback: number,
    drained: (queue: number, position: number) => boolean,
  ): number {
    const index = this.find(hash, drained);
    if (this.keys[index] === 0) this.insert(index, hash, fallback);
    this.lastUsed[index] = this.epoch;
    return this.queues[index]!;
  }

  /** The flow's queue, or -1 when it has none yet. */
  lookup(hash: number): number {
    const index = hash === 0 ? -1 : this.slotOf(hash);
    return index < 0 ? -1 : this.queues[index]!;
  }

  /** Notes that a packet of the flow was queued and the queue's tx head is now `position`. */
  wrote(hash: number, position: number): void {
    const index = this.slotOf(hash);
    if (index < 0) return;
    this.positions[index] = position;
    this.written[index] = 1;
  }

  private find(hash: number, drained: (queue: number, position: number) => boolean): number {
    const index = this.slotOf(hash);
    if (index >= 0) return index;
    if ((this.size + 1) * 2 > this.capacity) this.makeRoom(drained);
    return this.freeSlot(hash);
  }

  private slotOf(hash: number): number {
    const mask = this.capacity - 1;
    for (let index = hash & mask; ; index = (index + 1) & mask) {
      const key = this.keys[index]!;
      if (key === hash) return index;
      if (key === 0) return -1;
    }
  }

  private freeSlot(hash: number): number {
    const mask = this.capacity - 1;
    let index = hash & mask;
    while (this.keys[index] !== 0) index = (index + 1) & mask;
    return index;
  }

  private insert(index: number, hash: number, queue: number): void {
    this.keys[index] = hash;
    this.queues[index] = queue;
    this.written[index] = 0;
    this.size++;
  }

  /** Evicts idle, drained entries; doubles the table when that frees too little. */
  private makeRoom(drained: (queue: number, position: number) => boolean): void {
    const survivors: number[] = [];
    for (let index = 0; index < this.capacity; index++) {
      const key = this.keys[index]!;
      if (key === 0) continue;
      const idle = this.lastUsed[index]! < this.epoch;
      const inFlight =
        this.written[index] === 1 && !drained(this.queues[index]!, this.positions[index]!);
      if (!idle || inFlight) survivors.push(index);
    }
    this.epoch++;
    const capacity = survivors.length * 4 > this.capacity ? this.capacity * 2 : this.capacity;
    const old = {
      keys: this.keys,
      queues: this.queues,
      positions: this.positions,
      written: this.written,
      lastUsed: this.lastUsed,
    };
    this.capacity = capacity;
    this.keys = new Uint32Array(capacity);
    this.queues = new Uint16Array(capacity);
    this.positions = new Int32Array(capacity);
    this.written = new Uint8Array(capacity);
    this.lastUsed = new Uint32Array(capacity);
    this.size = 0;
    for (const from of survivors) {
      const to = this.freeSlot(old.keys[from]!);
      this.insert(to, old.keys[from]!, old.queues[from]!);
      this.positions[to] = old.positions[from]!;
      this.written[to] = old.written[from]!;
      this.lastUsed[to] = old.lastUsed[from]!;
    }
  }
}
