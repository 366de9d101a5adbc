import type { Conntrack } from '../lib/conntrack.js';
import type { Logger } from '../lib/logger.js';

/**
 * Clears tracked flows of addresses that changed hands, beside the sync loop rather than inside it: a
 * conntrack run per address must never hold back the next policy change. Addresses queue up (each
 * once, with the pod that held it), and one drain at a time clears them a few at a time.
 */

/** conntrack runs at once when clearing many addresses. */
const CONCURRENCY = 8;

export class FlowForgetter {
  private readonly conntrack: Conntrack;
  private readonly logger: Logger;
  private readonly queue = new Map<string, { previous: string; next: string | null }>();
  private draining: Promise<void> | null = null;
  private stopped = false;

  constructor(conntrack: Conntrack, logger: Logger) {
    this.conntrack = conntrack;
    this.logger = logger;
  }

  /** Queues addresses (with the pod that held each, and the one that holds it now) for clearing. */
  forget(changes: ReadonlyMap<string, { previous: string; next: string | null }>): void {
    if (this.stopped) return;
    for (const [address, change] of changes) this.queue.set(address, change);
    this.draining ??= this.drain().finally(() => {
      this.draining = null;
      if (this.queue.size > 0 && !this.stopped) this.forget(new Map());
    });
  }

  /** Resolves once everything queued so far has been cleared (tests and shutdown wait on it). */
  async idle(): Promise<void> {
    while (this.draining !== null) await this.draining;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.idle();
  }

  private async drain(): Promise<void> {
    while (this.queue.size > 0) {
      const batch = [...this.queue.entries()].slice(0, CONCURRENCY);
      for (const [address] of batch) this.queue.delete(address);
      await Promise.all(batch.map(([address, change]) => this.clear(address, change)));
    }
  }

  private async clear(address: string, change: { previous: string; next: string | null }): Promise<void> {
    try {
      const deleted = await this.conntrack.forget(address);
      if (deleted > 0) this.logger.info({ address, previousPod: change.previous, pod: change.next, deleted }, 'forgot tracked flows of an address that changed hands');
    } catch (error) {
      this.logger.warn({ address, err: error instanceof Error ? error.message : String(error) }, 'could not forget tracked flows of an address that changed hands');
    }
  }
}
