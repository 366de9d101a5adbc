import { HttpMethod, RequestContext, Watch } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import { fetch } from 'undici';
import { PalisadeError } from '../errors.js';
import type { Logger } from '../logger.js';
import { backoffDelay, realSleep } from '../retry.js';
import type { RetryPolicy } from '../retry.js';

/**
 * List-then-watch for one resource, on @kubernetes/client-node's KubeConfig (auth, TLS) and Watch
 * (the event stream). Not its ListWatch informer: that one keeps every whole object in its cache
 * (a node would hold every Pod of the cluster, tens of kilobytes each) and never asks for bookmarks.
 * Here each object is handed on as it arrives and only what the compiler needs is kept by the caller.
 *
 * The protocol, as client-go's reflector runs it: list (the resourceVersion of the list is where the
 * watch starts), watch from it with bookmarks (which move the resourceVersion forward on quiet
 * resources), relist at once on 410 Gone, and reconnect with exponential backoff when the API server
 * cannot be reached or answers with an error.
 */

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';
export type KubeObject = Record<string, unknown>;

/**
 * A complete list arrives as begin, pages, end; objects absent from every page are gone. Pages are
 * handed on as they arrive, so a large cluster's objects are never all held at once. A list that
 * fails half way never ends: nothing is deleted on its account, and the next list completes it.
 */
export interface ReflectorHandler {
  beginList(): void;
  listPage(objects: readonly KubeObject[]): void;
  endList(): void;
  event(type: WatchEventType, object: KubeObject): void;
}

export interface ReflectorStats {
  lists: number;
  /** Lists after the first: forced by 410 Gone or by an error. */
  relists: number;
  /** Watches (re)started. */
  watches: number;
  /** Failed lists or watches, each followed by a backoff. */
  failures: number;
  /** Objects the handler threw on: each one makes the reflector relist, so no change is lost. */
  handlerErrors: number;
  lastError: string | null;
}

export interface ReflectorOptions {
  readonly kubeconfig: KubeConfig;
  /** e.g. "/api/v1/pods" or "/apis/networking.k8s.io/v1/networkpolicies". */
  readonly path: string;
  readonly handler: ReflectorHandler;
  readonly logger: Logger;
  readonly backoff?: RetryPolicy;
  /** Server-side watch timeout; jittered so many nodes do not reconnect in step. */
  readonly watchTimeoutSeconds?: number;
  /** 'list' is the first complete list; 'relist' any later one. */
  readonly onStats?: (event: 'list' | 'relist' | 'watch' | 'failure' | 'handler-error') => void;
}

const DEFAULT_BACKOFF: RetryPolicy = { attempts: Infinity, baseDelayMs: 250, maxDelayMs: 30_000, sleep: realSleep };

export class ApiRequestError extends PalisadeError {
  readonly status: number;

  constructor(path: string, status: number, body: string) {
    super('KUBE_API_ERROR', `GET ${path}: HTTP ${status}: ${body.slice(0, 300)}`);
    this.name = 'ApiRequestError';
    this.status = status;
  }
}

/** Objects per list page, as client-go's reflector asks for. */
const LIST_PAGE_SIZE = 500;

interface ListPage {
  readonly items: readonly KubeObject[];
  readonly resourceVersion: string;
  readonly continueToken: string | null;
}

function isRecord(value: unknown): value is KubeObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function resourceVersionOf(object: unknown): string | null {
  if (!isRecord(object) || !isRecord(object['metadata'])) return null;
  const rv = object['metadata']['resourceVersion'];
  return typeof rv === 'string' && rv !== '' ? rv : null;
}

export class Reflector {
  readonly path: string;
  readonly stats: ReflectorStats = { lists: 0, relists: 0, watches: 0, failures: 0, handlerErrors: 0, lastError: null };
  private readonly options: ReflectorOptions;
  private readonly backoff: RetryPolicy;
  private resourceVersion: string | null = null;
  private stopped = true;
  private hasListed = false;
  private controller: AbortController | null = null;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;

  constructor(options: ReflectorOptions) {
    this.options = options;
    this.path = options.path;
    this.backoff = options.backoff ?? DEFAULT_BACKOFF;
  }

  /** True once the first complete list has been handed over. */
  get synced(): boolean {
    return this.hasListed;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.controller?.abort();
    this.wake?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        if (this.resourceVersion === null) await this.relist();
        const outcome = await this.watchOnce(this.resourceVersion!);
        failures = 0;
        if (outcome === 'expired') {
          this.options.logger.info({ path: this.path }, 'watch expired (410 Gone); relisting');
          this.resourceVersion = null;
        } else if (outcome === 'relist') {
          // The event the handler threw on is behind the resourceVersion already: only a list brings it back.
          this.resourceVersion = null;
        }
      } catch (error) {
        if (this.stopped) break;
        this.stats.failures++;
        this.stats.lastError = error instanceof Error ? error.message : String(error);
        this.options.onStats?.('failure');
        const delay = backoffDelay(this.backoff, failures++);
        this.options.logger.warn({ path: this.path, err: this.stats.lastError, retryInMs: delay }, 'list or watch failed; the last rules stay in force');
        // The watch resumes from the last resourceVersion seen; if that is too old by then, the
        // server answers 410 and a relist follows.
        await this.pause(delay);
      }
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      void this.backoff.sleep(ms).then(resolve);
    });
  }

  private async relist(): Promise<void> {
    this.options.handler.beginList();
    let token: string | null = null;
    let resourceVersion = '';
    do {
      const page = await this.listPage(token);
      if (this.stopped) return;
      try {
        this.options.handler.listPage(page.items);
      } catch (error) {
        this.handlerFailed(error);
        throw new PalisadeError('WATCH_HANDLER_FAILED', `handling a list page of ${this.path} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      }
      // The list's resourceVersion is that of its first page: every later page is cut from the same snapshot.
      if (token === null) resourceVersion = page.resourceVersion;
      token = page.continueToken;
    } while (token !== null);
    this.options.handler.endList();
    this.resourceVersion = resourceVersion;
    const relist = this.hasListed;
    this.hasListed = true;
    this.stats.lists++;
    if (relist) this.stats.relists++;
    // Reported after `synced` turns true, so a listener can tell the moment every watch has listed.
    this.options.onStats?.(relist ? 'relist' : 'list');
  }

  private async listPage(continueToken: string | null): Promise<ListPage> {
    const { kubeconfig } = this.options;
    const cluster = kubeconfig.getCurrentCluster();
    if (cluster === null) throw new PalisadeError('KUBE_CONFIG', 'the kubeconfig has no current cluster');
    const query = new URLSearchParams({ limit: String(LIST_PAGE_SIZE) });
    if (continueToken !== null) query.set('continue', continueToken);
    const context = new RequestContext(`${cluster.server}${this.path}?${query.toString()}`, HttpMethod.GET);
    await kubeconfig.applySecurityAuthentication(context);
    this.controller = new AbortController();
    const dispatcher = context.getDispatcher();
    const response = await fetch(context.getUrl(), {
      method: 'GET',
      headers: context.getHeaders(),
      signal: this.controller.signal,
      ...(dispatcher === undefined ? {} : { dispatcher }),
    });
    const text = await response.text();
    if (response.status !== 200) throw new ApiRequestError(this.path, response.status, text);
    const body: unknown = JSON.parse(text);
    const items = isRecord(body) && Array.isArray(body['items']) ? body['items'].filter(isRecord) : null;
    const resourceVersion = resourceVersionOf(body);
    if (items === null || resourceVersion === null) throw new ApiRequestError(this.path, response.status, 'list response without items or resourceVersion');
    const metadata = isRecord(body) && isRecord(body['metadata']) ? body['metadata'] : {};
    const next = typeof metadata['continue'] === 'string' && metadata['continue'] !== '' ? metadata['continue'] : null;
    return { items, resourceVersion, continueToken: next };
  }

  /**
   * @kubernetes/client-node's Watch swallows whatever its callback throws (and lines it cannot parse),
   * so every call into the handler is guarded here: the error is logged and counted, and the stream is
   * abandoned for a relist, which hands over the state the failed event would have.
   */
  private handlerFailed(error: unknown): void {
    this.stats.handlerErrors++;
    this.stats.lastError = `handler: ${error instanceof Error ? error.message : String(error)}`;
    this.options.logger.error({ path: this.path, err: error instanceof Error ? error.stack : String(error) }, 'handling a watched object failed; relisting so no change is lost');
    this.options.onStats?.('handler-error');
  }

  /** Resolves when the stream ends normally, expires, or must be replaced by a relist; rejects when it fails. */
  private watchOnce(resourceVersion: string): Promise<'closed' | 'expired' | 'relist'> {
    const timeout = this.options.watchTimeoutSeconds ?? 300;
    const query = {
      resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds: Math.round(timeout * (1 + Math.random() * 0.5)),
    };
    this.stats.watches++;
    this.options.onStats?.('watch');
    return new Promise((resolve, reject) => {
      let expired = false;
      let abandoned = false;
      let controller: AbortController | null = null;
      const onEvent = (type: string, object: unknown): void => {
        if (abandoned) return;
        if (type === 'ERROR') {
          const code = isRecord(object) ? object['code'] : undefined;
          if (code === 410) expired = true;
          else this.options.logger.warn({ path: this.path, object }, 'watch reported an error');
          return;
        }
        const rv = resourceVersionOf(object);
        if (rv !== null) this.resourceVersion = rv;
        if (type === 'BOOKMARK' || !isRecord(object)) return;
        if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') return;
        try {
          this.options.handler.event(type, object);
        } catch (error) {
          abandoned = true;
          this.handlerFailed(error);
          controller?.abort();
        }
      };
      const onDone = (error: unknown): void => {
        if (abandoned) resolve('relist');
        else if (expired) resolve('expired');
        else if (error === null || error === undefined || (error instanceof Error && error.name === 'TimeoutError') || this.stopped) resolve('closed');
        else reject(error instanceof Error ? error : new Error(String(error)));
      };
      new Watch(this.options.kubeconfig)
        .watch(this.path, query, onEvent, onDone)
        .then((started) => {
          controller = started;
          this.controller = started;
          if (this.stopped || abandoned) started.abort();
        })
        .catch(reject);
    });
  }
}
