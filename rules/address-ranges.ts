import type { IpBlock } from './model.js';
import { formatIPv4 } from './ipv4.js';

/**
 * The addresses a list of ipBlocks covers, as disjoint CIDRs. A rule's ipBlock peers become one
 * hash:net set holding exactly this cover, so a rule costs one set lookup however many blocks it lists,
 * and excepts need no `nomatch` entries whose most-specific-match rule would make one block's except
 * and another block's range interfere.
 *
 * Addresses are unsigned 32-bit integers held in doubles (exact up to 2^53), ranges inclusive.
 */

interface Range {
  readonly start: number;
  readonly end: number;
}

const LAST = 0xffffffff;

function blockRanges(block: IpBlock): Range[] {
  const size = 2 ** (32 - block.cidr.prefix);
  let ranges: Range[] = [{ start: block.cidr.base, end: block.cidr.base + size - 1 }];
  const excepts = [...block.except].sort((a, b) => a.base - b.base);
  for (const except of excepts) {
    const start = except.base;
    const end = except.base + 2 ** (32 - except.prefix) - 1;
    const next: Range[] = [];
    for (const r of ranges) {
      if (end < r.start || start > r.end) {
        next.push(r);
        continue;
      }
      if (r.start < start) next.push({ start: r.start, end: start - 1 });
      if (end < r.end) next.push({ start: end + 1, end: r.end });
    }
    ranges = next;
  }
  return ranges;
}

function merge(ranges: Range[]): Range[] {
  ranges.sort((a, b) => a.start - b.start || a.end - b.end);
  const out: Range[] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last !== undefined && r.start <= last.end + 1) {
      if (r.end > last.end) out[out.length - 1] = { start: last.start, end: r.end };
    } else out.push(r);
  }
  return out;
}

/** The fewest CIDRs covering [start, end] exactly, largest aligned block first. */
function cover(range: Range, out: string[]): void {
  let start = range.start;
  while (start <= range.end) {
    let prefix = 32;
    // Grow the block while it stays aligned at `start` and inside the range.
    while (prefix > 0) {
      const size = 2 ** (32 - prefix + 1);
      if (start % size !== 0 || start + size - 1 > range.end) break;
      prefix--;
    }
    out.push(`${formatIPv4(start)}/${prefix}`);
    start += 2 ** (32 - prefix);
  }
}

/**
 * The CIDRs covering exactly the union of the blocks (each minus its excepts), sorted. hash:net cannot
 * hold a /0, so the whole address space is two /1s.
 */
export function ipBlockCover(blocks: readonly IpBlock[]): string[] {
  const out: string[] = [];
  for (const range of merge(blocks.flatMap(blockRanges))) {
    if (range.start === 0 && range.end === LAST) {
      out.push('0.0.0.0/1', '128.0.0.0/1');
      continue;
    }
    cover(range, out);
  }
  return out;
}
