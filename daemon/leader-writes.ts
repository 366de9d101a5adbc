import type { Clock } from './clock.js';
import { TokenBucket } from './token-bucket.js';

/**
 * What the policy reporter's Events and the ClusterNetworkPolicy status writer share: writes go one at
 * a time, only while this daemon holds the Lease, through a token bucket, and a failed write holds the
 * next ones back with growing backoff. The writer says what is due next and how a write went.
 */

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 60_000;

/** written: done; settled: given up or waiting for the watch, without backoff; retry: failed, back off. */
export type WriteResult = 'written' | 'settled' | 'retry';

export interface LeaderWritesOptions<T> {
  readonly election: { readonly leader: boolean };
  readonly clock: Clock;
  readonly rate: { readonly perSecond: number; readonly burst: number };
  /** The next item due, or null when nothing is. */
  readonly next: () => T | null;
  readonly write: (item: T) => Promise<WriteResult>;
}

export class LeaderWrites<T> {
  private readonly bucket: TokenBucket;
  private timer: unknown = null;
  private writing: Promise<void> | null = null;
  private failures = 0;
  private retryAt = 0;
  private stopped = false;

  constructor(private readonly options: LeaderWritesOptions<T>) {
    this.bucket = new TokenBucket(options.rate.perSecond, options.rate.burst, () => options.clock.now());
  }

  /** Something may be due, or leadership changed: writing starts unless it runs or waits already. */
  kick(delayMs = 0): void {
    if (this.stopped || this.writing !== null || this.timer !== null) return;
    this.timer = this.options.clock.setTimeout(() => {
      this.timer = null;
      this.writing = this.pump().then((later) => {
        this.writing = null;
        if (later !== null) this.kick(later);
      });
    }, delayMs);
  }

  /** How long the next failure would hold writes back, for the log line saying so. */
  nextBackoffMs(): number {
    return Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** this.failures);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    this.timer = null;
    await this.writing;
  }

  /** Resolves once no write is running or could run now (for tests). */
  async idle(): Promise<void> {
    while (this.writing !== null) await this.writing;
  }

  /** Writes what is due while it may; resolves with how long to wait before the next round, or null for none. */
  private async pump(): Promise<number | null> {
    const { clock, election } = this.options;
    for (;;) {
      if (this.stopped || !election.leader) return null;
      const item = this.options.next();
      if (item === null) return null;
      const wait = Math.max(this.retryAt - clock.now(), this.bucket.waitMs());
      if (wait > 0) return wait;
      this.bucket.take();
      const result = await this.options.write(item);
      if (result === 'written') {
        this.failures = 0;
        this.retryAt = 0;
      } else if (result === 'retry') {
        this.retryAt = clock.now() + this.nextBackoffMs();
        this.failures++;
      }
    }
  }
}
