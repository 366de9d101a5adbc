/** A fixed number of the latest items: pushing past capacity overwrites the oldest. */
export class RingBuffer<T> {
  private readonly items: (T | undefined)[];
  private next = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`ring buffer capacity ${capacity}: must be a whole number of at least 1`);
    this.items = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  push(item: T): void {
    this.items[this.next] = item;
    this.next = (this.next + 1) % this.capacity;
    if (this.count < this.capacity) this.count++;
  }

  *newestFirst(): IterableIterator<T> {
    for (let i = 1; i <= this.count; i++) yield this.items[(this.next - i + this.capacity) % this.capacity]!;
  }
}
