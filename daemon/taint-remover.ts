import type { Logger } from '../lib/logger.js';
import type { KubeObject, ReflectorHandler } from '../lib/kube/reflector.js';
import { ApiRequestError } from '../lib/kube/api-client.js';
import type { Clock } from './clock.js';
import { formatStartupTaint, matchesStartupTaint, nodeTaints, removalPatch } from './startup-taint.js';
import type { JsonPatchOperation, StartupTaint } from './startup-taint.js';

/**
 * Removes the startup taint from this node, and only this node, once palisade is ready (every watch
 * listed, the first apply done, the dataplane not failing):
 *
 *   Node watch (own node) ─► observe(): is the taint on it? ─┐
 *   sync loop ─► setReady(true|false) ───────────────────────┴► attempt: GET the node, PATCH out the taint
 *
 * It runs beside enforcement, never in its way: the sync loop only tells it whether palisade is
 * ready, and never waits on it. An attempt GETs the node and, if the taint is there, sends a JSON
 * patch that tests the taints list as read and removes the one taint (startup-taint.ts). No taint, no
 * PATCH. A conflict (409, or 422 when the list changed under the test) is retried at once with the
 * node read afresh, a few times, then with backoff like any other failure (403 from RBAC or the
 * admission policy, the API server away). Should the taint come back later (someone adds it again),
 * it is removed again, but only while palisade is ready: while it is not, the taint keeps new pods
 * off the node, which is what the taint is for.
 */

export interface TaintClient {
  getJson(path: string, signal?: AbortSignal): Promise<unknown>;
  patchJson(path: string, patch: readonly JsonPatchOperation[], signal?: AbortSignal): Promise<unknown>;
}

export type RemovalOutcome = 'removed' | 'conflict' | 'error';

export interface TaintRemoverOptions {
  readonly taint: StartupTaint;
  readonly nodeName: string;
  readonly client: TaintClient;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Whether the taint is on the node as last seen (metric palisade_startup_taint_present). */
  readonly onPresent?: (present: boolean) => void;
  /** Every PATCH's outcome (metric palisade_startup_taint_removals_total). */
  readonly onOutcome?: (outcome: RemovalOutcome) => void;
  readonly retryBaseMs?: number;
  readonly retryMaxMs?: number;
}

/** Conflicts retried at once, with the node read afresh, before backoff applies to them too. */
const IMMEDIATE_CONFLICT_RETRIES = 3;

export interface StartupTaintStatus {
  readonly taint: string;
  readonly key: string;
  /** On this node as last seen (watch, GET or PATCH); null until the node has been seen. */
  readonly onNode: boolean | null;
  /** Whether this process has removed it (at least once). */
  readonly removed: boolean;
  readonly removals: number;
  readonly lastRemovedAt: string | null;
  /** Why the last attempt failed; null after a success. */
  readonly error: string | null;
  readonly consecutiveFailures: number;
  /** When the next attempt is due after a failure (ISO time); null when none is waiting. */
  readonly retryAt: string | null;
}

export class TaintRemover {
  private readonly options: TaintRemoverOptions;
  private ready = false;
  private onNode: boolean | null = null;
  private running: Promise<void> | null = null;
  private timer: unknown = null;
  private retryAt: number | null = null;
  private failures = 0;
  private conflicts = 0;
  private lastError: string | null = null;
  private removals = 0;
  private lastRemovedAt: number | null = null;
  private stopped = false;

  constructor(options: TaintRemoverOptions) {
    this.options = options;
  }

  private get path(): string {
    return `/api/v1/nodes/${encodeURIComponent(this.options.nodeName)}`;
  }

  /** The node as the watch last delivered it (null: deleted, or absent from a list). */
  observe(node: KubeObject | null): void {
    const present = node !== null && nodeTaints(node).some((t) => matchesStartupTaint(this.options.taint, t));
    this.setOnNode(present);
    if (!present) {
      // Gone, whoever removed it: nothing left to retry or to report as failing.
      this.cancelRetry();
      this.succeeded();
    }
    this.kick();
  }

  /** Whether palisade is ready now; told after every sync, so the first success starts the removal. */
  setReady(ready: boolean): void {
    this.ready = ready;
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelRetry();
    await this.running;
  }

  /** For tests: resolves once no attempt is running. */
  async idle(): Promise<void> {
    while (this.running !== null) await this.running;
  }

  status(): StartupTaintStatus {
    return {
      taint: formatStartupTaint(this.options.taint),
      key: this.options.taint.key,
      onNode: this.onNode,
      removed: this.removals > 0,
      removals: this.removals,
      lastRemovedAt: this.lastRemovedAt === null ? null : new Date(this.lastRemovedAt).toISOString(),
      error: this.lastError,
      consecutiveFailures: this.failures,
      retryAt: this.retryAt === null ? null : new Date(this.retryAt).toISOString(),
    };
  }

  private setOnNode(present: boolean): void {
    if (this.onNode !== present) this.options.onPresent?.(present);
    this.onNode = present;
  }

  private wanted(): boolean {
    return !this.stopped && this.ready && this.onNode === true;
  }

  /** Starts an attempt if one is wanted and none is running or waiting out a backoff. */
  private kick(): void {
    if (!this.wanted() || this.running !== null || this.timer !== null) return;
    this.running = this.attempt().finally(() => {
      this.running = null;
      this.kick();
    });
  }

  private cancelRetry(): void {
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    this.timer = null;
    this.retryAt = null;
  }

  private async attempt(): Promise<void> {
    const { client, taint, logger, nodeName } = this.options;
    try {
      const patch = removalPatch(taint, nodeTaints(await client.getJson(this.path)));
      if (patch === null) {
        // The watch was behind: nothing to remove, nothing sent.
        this.setOnNode(false);
        this.succeeded();
        return;
      }
      if (!this.wanted()) return;
      const patched = await client.patchJson(this.path, patch);
      this.setOnNode(nodeTaints(patched).some((t) => matchesStartupTaint(taint, t)));
      this.removals++;
      this.lastRemovedAt = this.options.clock.now();
      this.options.onOutcome?.('removed');
      logger.info({ taint: formatStartupTaint(taint), node: nodeName, ...(this.failures === 0 ? {} : { afterFailures: this.failures }) }, 'startup taint removed: pods can now be scheduled on this node, and meet its rules');
      this.succeeded();
    } catch (error) {
      this.failed(error);
    }
  }

  private succeeded(): void {
    this.failures = 0;
    this.conflicts = 0;
    this.lastError = null;
  }

  private failed(error: unknown): void {
    const status = error instanceof ApiRequestError ? error.status : null;
    const conflict = status === 409 || status === 422;
    const message = error instanceof Error ? error.message : String(error);
    this.failures++;
    this.conflicts = conflict ? this.conflicts + 1 : 0;
    this.options.onOutcome?.(conflict ? 'conflict' : 'error');
    const base = this.options.retryBaseMs ?? 1000;
    const delay = conflict && this.conflicts <= IMMEDIATE_CONFLICT_RETRIES ? 0 : Math.min(this.options.retryMaxMs ?? 60_000, base * 2 ** Math.min(this.failures - 1, 20));
    const fields = { taint: formatStartupTaint(this.options.taint), node: this.options.nodeName, err: message, failures: this.failures, retryInMs: delay };
    // One line when a run of failures starts or changes cause; the rest at debug, and /status holds the latest.
    if (this.failures === 1 || message !== this.lastError) {
      this.options.logger.warn(fields, conflict ? 'the node changed while removing the startup taint; reading it again' : 'cannot remove the startup taint from this node; retrying (enforcement is not affected; new pods stay off the node meanwhile)');
    } else {
      this.options.logger.debug(fields, 'removing the startup taint failed again');
    }
    this.lastError = message;
    if (this.stopped) return;
    this.retryAt = this.options.clock.now() + delay;
    this.timer = this.options.clock.setTimeout(() => {
      this.timer = null;
      this.retryAt = null;
      this.kick();
    }, delay);
  }
}

/**
 * Wraps the Node watch's handler so the taint remover sees this node as it changes. Cheap (a name
 * compared per object); the wrapped handler gets everything as before.
 */
export function watchingNode(nodeName: string, inner: ReflectorHandler, observe: (node: KubeObject | null) => void): ReflectorHandler {
  const isOwn = (object: KubeObject): boolean => {
    const metadata = object['metadata'];
    return typeof metadata === 'object' && metadata !== null && (metadata as { name?: unknown }).name === nodeName;
  };
  let seen: KubeObject | null = null;
  return {
    beginList: () => {
      seen = null;
      inner.beginList();
    },
    listPage: (objects) => {
      for (const object of objects) if (isOwn(object)) seen = object;
      inner.listPage(objects);
    },
    endList: () => {
      inner.endList();
      observe(seen);
      seen = null;
    },
    event: (type, object) => {
      inner.event(type, object);
      if (isOwn(object)) observe(type === 'DELETED' ? null : object);
    },
  };
}
