import type { IncomingMessage } from 'node:http';
import { PalisadeError } from '../errors.js';
import type { Logger } from '../logger.js';
import { backoffDelay, realSleep } from '../retry.js';
import type { RetryPolicy } from '../retry.js';
import { ApiRequestError } from './api-client.js';
import type { ApiClient } from './api-client.js';
import { ListReader } from './list-reader.js';

/**
 * List-then-watch for one resource, as client-go's reflector runs it, on a thin client (api-client.ts)
 * that hands every object on as soon as it is parsed: the caller keeps only what it needs, and no
 * list is ever held whole, however the server sends it.
 *
 *   first sync ─ streaming list: one watch with sendInitialEvents=true (served from the API server's
 *                watch cache, one object at a time), ending in a bookmark; the same stream goes on
 *                as the watch. Where the server does not offer it (before Kubernetes 1.27, or with
 *                the WatchList feature off: it answers 4xx), a list from the watch cache
 *                (resourceVersion=0, pages of 500 where the server pages it), read as it streams.
 *   then       ─ watch from the list's resourceVersion, with bookmarks; relist at once on 410 Gone,
 *                reconnect with exponential backoff when the server cannot be reached or errs.
 *
 * Nothing the server or the handler does can end the loop: an error is counted, logged, and followed
 * by a backoff and, where an event may have been lost, a relist.
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
  /** How the last list was read: a streaming list (watch with initial events) or paged lists. */
  listMode: 'streaming' | 'paged' | null;
  lastError: string | null;
}

export interface ReflectorOptions {
  readonly client: ApiClient;
  /** e.g. "/api/v1/pods" or "/apis/networking.k8s.io/v1/networkpolicies". */
  readonly path: string;
  readonly handler: ReflectorHandler;
  readonly logger: Logger;
  readonly backoff?: RetryPolicy;
  /** Server-side watch timeout; jittered so many nodes do not reconnect in step. */
  readonly watchTimeoutSeconds?: number;
  /** 'auto' (the default) tries a streaming list first; 'paged' never does. */
  readonly listMode?: 'auto' | 'paged';
  /** Each failed list or watch, before its backoff: a 404 may mean the resource is no longer served. */
  readonly onError?: (error: unknown) => void;
  /** 'list' is the first complete list; 'relist' any later one. */
  readonly onStats?: (event: 'list' | 'relist' | 'watch' | 'failure' | 'handler-error') => void;
}

const DEFAULT_BACKOFF: RetryPolicy = { attempts: Infinity, baseDelayMs: 250, maxDelayMs: 30_000, sleep: realSleep };

/** Objects per list page, as client-go's reflector asks for. */
const PAGE_SIZE = 500;
/**
 * How many objects are handed on at once. Few: the handler keeps a small record of each and drops the
 * object, and objects held back in a batch live long enough to be copied into the old generation,
 * which then grows with garbage the size of the batch.
 */
const HAND_ON = 16;
/** The bookmark that ends a streaming list's initial events. */
const INITIAL_EVENTS_END = 'k8s.io/initial-events-end';
/** A watch that sends nothing (not even a bookmark) for this long past its timeout is dead. */
const SILENCE_GRACE_MS = 60_000;
const NEWLINE = 0x0a;
/**
 * A resumed watch the server ends sooner than this with nothing in it counts as a failure, as in
 * client-go: otherwise a server that ends every watch at once would be asked again at once, for ever.
 */
export const QUICK_WATCH_MS = 1000;

export { ApiRequestError };

class MalformedStreamError extends PalisadeError {
  constructor(path: string, detail: string) {
    super('KUBE_STREAM_MALFORMED', `${path}: ${detail}`);
    this.name = 'MalformedStreamError';
  }
}

function isRecord(value: unknown): value is KubeObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function resourceVersionOf(object: unknown): string | null {
  if (!isRecord(object) || !isRecord(object['metadata'])) return null;
  const rv = object['metadata']['resourceVersion'];
  return typeof rv === 'string' && rv !== '' ? rv : null;
}

type StreamOutcome = 'closed' | 'expired' | 'relist';

/** What a watch stream's events go to: the list being streamed, then the watch. */
interface StreamState {
  listing: boolean;
  page: KubeObject[];
  outcome: StreamOutcome;
}

export class Reflector {
  readonly path: string;
  readonly stats: ReflectorStats = { lists: 0, relists: 0, watches: 0, failures: 0, handlerErrors: 0, listMode: null, lastError: null };
  private readonly options: ReflectorOptions;
  private readonly backoff: RetryPolicy;
  /** Watch lines read so far, to tell a watch that ended at once with nothing in it. */
  private linesSeen = 0;
  private resourceVersion: string | null = null;
  private stopped = true;
  private hasListed = false;
  /** Cleared for good once the server shows it does not offer streaming lists. */
  private streaming: boolean;
  private controller: AbortController | null = null;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;

  constructor(options: ReflectorOptions) {
    this.options = options;
    this.path = options.path;
    this.backoff = options.backoff ?? DEFAULT_BACKOFF;
    this.streaming = (options.listMode ?? 'auto') === 'auto';
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
      let tryingStream = false;
      try {
        let outcome: StreamOutcome;
        if (this.resourceVersion !== null) {
          const began = Date.now();
          const linesBefore = this.linesSeen;
          outcome = await this.watch(this.resourceVersion, false);
          if (outcome === 'closed' && !this.stopped && this.linesSeen === linesBefore && Date.now() - began < QUICK_WATCH_MS) {
            throw new PalisadeError('WATCH_ENDED_AT_ONCE', `the API server ended the watch of ${this.path} within ${Date.now() - began} ms without sending anything`);
          }
        } else if (this.streaming && (await this.options.client.offersStreamingLists())) {
          tryingStream = true;
          outcome = await this.streamingList();
        } else {
          await this.pagedList();
          continue;
        }
        failures = 0;
        if (outcome === 'expired') this.options.logger.info({ path: this.path }, 'watch expired (410 Gone); relisting');
        // After 410, or after an event the handler threw on (it is behind the resourceVersion already),
        // only a list brings the state back.
        if (outcome !== 'closed') this.resourceVersion = null;
      } catch (error) {
        if (this.stopped) break;
        if (tryingStream && error instanceof ApiRequestError && error.status >= 400 && error.status < 500 && error.status !== 401 && error.status !== 410 && error.status !== 429) {
          // The server does not offer streaming lists (the WatchList feature is off): lists from now on.
          this.streaming = false;
          this.options.logger.info({ path: this.path, status: error.status }, 'the API server does not offer streaming lists; listing in pages');
          continue;
        }
        if (error instanceof MalformedStreamError) this.resourceVersion = null;
        this.stats.failures++;
        this.stats.lastError = error instanceof Error ? error.message : String(error);
        this.options.onStats?.('failure');
        this.options.onError?.(error);
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

  /** A list complete: ends it at the handler and counts it. */
  private listed(resourceVersion: string, mode: 'streaming' | 'paged'): void {
    this.options.handler.endList();
    this.resourceVersion = resourceVersion;
    this.stats.listMode = mode;
    const relist = this.hasListed;
    this.hasListed = true;
    this.stats.lists++;
    if (relist) this.stats.relists++;
    // Reported after `synced` turns true, so a listener can tell the moment every watch has listed.
    this.options.onStats?.(relist ? 'relist' : 'list');
  }

  private handPage(objects: readonly KubeObject[]): void {
    try {
      this.options.handler.listPage(objects);
    } catch (error) {
      this.handlerFailed(error);
      throw new PalisadeError('WATCH_HANDLER_FAILED', `handling a list page of ${this.path} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
  }

  /** Lists from the watch cache, page by page, each page read as it streams in. */
  private async pagedList(): Promise<void> {
    this.options.handler.beginList();
    let token: string | null = null;
    let resourceVersion = '';
    do {
      const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
      // Served from the watch cache; a continued list must not name a resourceVersion.
      if (token === null) query.set('resourceVersion', '0');
      else query.set('continue', token);
      const response = await this.open(`${this.path}?${query.toString()}`);
      if (this.stopped) return;
      let page: KubeObject[] = [];
      const reader = new ListReader((item) => {
        if (!isRecord(item)) return;
        page.push(item);
        if (page.length >= HAND_ON) {
          this.handPage(page);
          page = [];
        }
      });
      await this.consume(response, (chunk) => reader.push(chunk), null);
      reader.end();
      if (page.length > 0) this.handPage(page);
      const metadata = isRecord(reader.fields['metadata']) ? reader.fields['metadata'] : {};
      const rv = metadata['resourceVersion'];
      if (typeof rv !== 'string' || rv === '') throw new MalformedStreamError(this.path, 'a list response without a resourceVersion');
      // The list's resourceVersion is that of its first page: every later page is cut from the same snapshot.
      if (token === null) resourceVersion = rv;
      token = typeof metadata['continue'] === 'string' && metadata['continue'] !== '' ? metadata['continue'] : null;
    } while (token !== null);
    if (!this.stopped) this.listed(resourceVersion, 'paged');
  }

  /** A streaming list: the initial events as a list, then the same stream as the watch. */
  private streamingList(): Promise<StreamOutcome> {
    this.options.handler.beginList();
    return this.watch(null, true);
  }

  /**
   * @kubernetes/client-node's Watch swallows whatever its callback throws (and lines it cannot parse);
   * here every call into the handler is guarded: the error is logged and counted, and the stream is
   * abandoned for a relist, which hands over the state the failed event would have.
   */
  private handlerFailed(error: unknown): void {
    this.stats.handlerErrors++;
    this.stats.lastError = `handler: ${error instanceof Error ? error.message : String(error)}`;
    this.options.logger.error({ path: this.path, err: error instanceof Error ? error.stack : String(error) }, 'handling a watched object failed; relisting so no change is lost');
    this.options.onStats?.('handler-error');
  }

  /**
   * Watches from `resourceVersion`, or (listing) streams the initial events first. Resolves when the
   * stream ends normally, expires, or must give way to a relist; rejects when it fails.
   */
  private async watch(resourceVersion: string | null, listing: boolean): Promise<StreamOutcome> {
    const timeout = Math.round((this.options.watchTimeoutSeconds ?? 300) * (1 + Math.random() * 0.5));
    const query = new URLSearchParams({ watch: '1', allowWatchBookmarks: 'true', timeoutSeconds: String(timeout) });
    if (listing) {
      query.set('sendInitialEvents', 'true');
      query.set('resourceVersionMatch', 'NotOlderThan');
    } else query.set('resourceVersion', resourceVersion!);
    this.stats.watches++;
    this.options.onStats?.('watch');
    const response = await this.open(`${this.path}?${query.toString()}`);
    const state: StreamState = { listing, page: [], outcome: 'closed' };
    // Lines are cut from the bytes and decoded one by one: decoding whole chunks and splitting the
    // text would make two copies of everything the stream carries.
    let rest: Buffer | null = null;
    await this.consume(response, (chunk) => {
      const buf: Buffer = rest === null ? chunk : Buffer.concat([rest, chunk]);
      let start = 0;
      for (let end = buf.indexOf(NEWLINE, start); end >= 0; end = buf.indexOf(NEWLINE, start)) {
        const line = end > start ? buf.toString('utf8', start, end) : '';
        start = end + 1;
        if (line.trim() !== '' && !this.onLine(line, state)) return false;
      }
      rest = start < buf.length ? buf.subarray(start) : null;
      return true;
    }, (timeout * 1000) + SILENCE_GRACE_MS);
    if (state.listing && state.outcome === 'closed') {
      // The stream ended before the initial events did: the list never completes, so nothing is
      // deleted on its account; the next attempt lists again.
      throw new MalformedStreamError(this.path, 'the streaming list ended before its initial events did');
    }
    return state.outcome;
  }

  /** One watch event; returns false when the stream must be abandoned. */
  private onLine(line: string, state: StreamState): boolean {
    this.linesSeen++;
    let event: unknown;
    try {
      event = JSON.parse(line);
    } catch (error) {
      throw new MalformedStreamError(this.path, `a watch event that is not JSON (${error instanceof Error ? error.message : String(error)}): ${line.slice(0, 200)}`);
    }
    if (!isRecord(event) || typeof event['type'] !== 'string') throw new MalformedStreamError(this.path, `a watch event without a type: ${line.slice(0, 200)}`);
    const type = event['type'];
    const object = event['object'];
    if (type === 'ERROR') {
      const code = isRecord(object) ? object['code'] : undefined;
      if (code === 410) {
        state.outcome = 'expired';
        return false;
      }
      throw new MalformedStreamError(this.path, `the watch reported an error: ${JSON.stringify(object).slice(0, 300)}`);
    }
    const rv = resourceVersionOf(object);
    if (type === 'BOOKMARK') {
      const annotations = isRecord(object) && isRecord(object['metadata']) ? object['metadata']['annotations'] : undefined;
      if (state.listing && isRecord(annotations) && annotations[INITIAL_EVENTS_END] === 'true') {
        if (rv === null) throw new MalformedStreamError(this.path, 'the end of a streaming list carries no resourceVersion');
        if (state.page.length > 0) this.handPage(state.page.splice(0));
        state.listing = false;
        this.listed(rv, 'streaming');
      } else if (rv !== null && !state.listing) this.resourceVersion = rv;
      return true;
    }
    if (!isRecord(object) || (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED')) return true;
    if (state.listing) {
      if (type !== 'ADDED') throw new MalformedStreamError(this.path, `a ${type} event among a streaming list's initial events`);
      state.page.push(object);
      if (state.page.length >= HAND_ON) this.handPage(state.page.splice(0));
      return true;
    }
    if (rv !== null) this.resourceVersion = rv;
    try {
      this.options.handler.event(type, object);
    } catch (error) {
      this.handlerFailed(error);
      state.outcome = 'relist';
      return false;
    }
    return true;
  }

  private async open(pathAndQuery: string): Promise<IncomingMessage> {
    this.controller = new AbortController();
    return this.options.client.get(pathAndQuery, this.controller.signal);
  }

  /**
   * Feeds the body to `onChunk` until it ends, `onChunk` returns false (the stream is dropped), the
   * reflector stops, or nothing arrives for `silenceMs`.
   */
  private consume(response: IncomingMessage, onChunk: (chunk: Buffer) => boolean | void, silenceMs: number | null): Promise<void> {
    return new Promise((resolve, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (error?: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        response.removeAllListeners('data');
        if (error === undefined) resolve();
        else reject(error);
      };
      const arm = (): void => {
        if (silenceMs === null) return;
        clearTimeout(timer);
        timer = setTimeout(() => {
          response.destroy();
          finish(new PalisadeError('KUBE_WATCH_SILENT', `${this.path}: nothing received for ${Math.round(silenceMs / 1000)} s`));
        }, silenceMs);
        timer.unref();
      };
      arm();
      response.on('data', (chunk: Buffer) => {
        if (settled) return;
        arm();
        let keep: boolean | void;
        try {
          keep = onChunk(chunk);
        } catch (error) {
          response.destroy();
          finish(error);
          return;
        }
        if (keep === false) {
          response.destroy();
          finish();
        }
      });
      response.on('end', () => finish());
      response.on('error', (error) => finish(this.stopped ? undefined : error));
      response.on('close', () => {
        if (!settled) finish(this.stopped || response.complete ? undefined : new PalisadeError('KUBE_STREAM_CLOSED', `${this.path}: the connection closed mid-response`));
      });
    });
  }
}
