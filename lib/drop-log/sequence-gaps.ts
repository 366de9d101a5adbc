/**
 * Loss detection from NFLOG sequence numbers. With the sequence flag set on a group, the kernel
 * numbers every record it builds for that group's listener, from 0 when the listener binds, in a
 * 32-bit counter. A record that never reaches the reader (its netlink batch dropped because the
 * socket's buffer was full, or lost on the way to palisade) leaves a gap; the next record shows it.
 */

export type SequenceVerdict =
  | { readonly kind: 'next' }
  | { readonly kind: 'gap'; readonly missing: number; readonly expected: number }
  | { readonly kind: 'backwards'; readonly expected: number };

const WRAP = 2 ** 32;

export class SequenceTracker {
  /** The number the next record should carry: 0 for a listener that has just bound. */
  private expected = 0;

  /** A new listener (the reader's program restarted) numbers from 0 again. */
  reset(): void {
    this.expected = 0;
  }

  observe(seq: number): SequenceVerdict {
    const expected = this.expected;
    this.expected = (seq + 1) % WRAP;
    if (seq === expected) return { kind: 'next' };
    const missing = (seq - expected + WRAP) % WRAP;
    // A jump of more than half the counter is a record from before, not billions of losses.
    if (missing > WRAP / 2) return { kind: 'backwards', expected };
    return { kind: 'gap', missing, expected };
  }
}
