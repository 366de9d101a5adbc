import http from 'node:http';
import https from 'node:https';
import { PalisadeError } from '../errors.js';
import type { Logger } from '../logger.js';
import { silentLogger } from '../logger.js';
import type { ClientConfig } from './client-config.js';

/**
 * Requests to the Kubernetes API over node:https. GETs leave the response body as a stream: lists and
 * watches are read as they arrive (list-reader.ts, reflector.ts), never buffered whole. The few writes
 * (the startup taint's JSON patch, the policy reporter's Lease and Events) send and read small JSON
 * bodies. One keep-alive agent per client, so the four watches and their lists share a few connections.
 */

export class ApiRequestError extends PalisadeError {
  readonly status: number;
  /** The metav1.Status reason, when the server sent one ("Expired", "Invalid", ...). */
  readonly reason: string | null;

  /** `context` says what the status means here, e.g. which credentials were refused. */
  constructor(path: string, status: number, body: string, context?: string, method = 'GET') {
    super('KUBE_API_ERROR', `${method} ${path}: HTTP ${status}: ${context === undefined ? '' : `${context}: `}${body.slice(0, 300)}`);
    this.name = 'ApiRequestError';
    this.status = status;
    let reason: string | null = null;
    try {
      const parsed = JSON.parse(body) as { reason?: unknown };
      if (typeof parsed.reason === 'string') reason = parsed.reason;
    } catch {
      // not a Status body; the message carries the text
    }
    this.reason = reason;
  }
}

const USER_AGENT = 'palisade/0.1.0';

interface Call {
  readonly method: 'GET' | 'PATCH' | 'POST' | 'PUT';
  readonly pathAndQuery: string;
  readonly body?: string;
  readonly contentType?: string;
}

export interface ApiClientOptions {
  readonly logger?: Logger;
}

/** Requests the API server answered with 401, by what followed. */
export interface UnauthorizedCounts {
  /** The credentials, fetched afresh, were accepted on the one retry. */
  recovered: number;
  /** They were refused again (or were unchanged, so not retried): the request failed. */
  refused: number;
}

export class ApiClient {
  readonly config: ClientConfig;
  readonly unauthorized: UnauthorizedCounts = { recovered: 0, refused: 0 };
  private readonly agent: http.Agent;
  private readonly logger: Logger;
  private streaming: Promise<boolean> | null = null;

  constructor(config: ClientConfig, options: ApiClientOptions = {}) {
    this.config = config;
    this.logger = options.logger ?? silentLogger;
    const secure = config.server.protocol === 'https:';
    this.agent = secure
      ? new https.Agent({
        keepAlive: true,
        ...(config.ca === null ? {} : { ca: config.ca }),
        ...(config.cert === null ? {} : { cert: config.cert }),
        ...(config.key === null ? {} : { key: config.key }),
        rejectUnauthorized: !config.insecureSkipTlsVerify,
        ...(config.tlsServerName === null ? {} : { servername: config.tlsServerName }),
      })
      : new http.Agent({ keepAlive: true });
  }

  /**
   * GET `pathAndQuery`; resolves with the response once a 200 arrives (its body unread), and rejects
   * with ApiRequestError for any other status.
   *
   * A 401 is retried once, with the token fetched afresh (a rotated token file read again, the exec
   * plugin run again), and only if that gives a different token: the same token would be refused
   * again. A second refusal is an error naming the credentials; the caller's backoff paces what
   * follows, so a token the server will not take costs one or two requests per attempt, never a loop.
   */
  async get(pathAndQuery: string, signal?: AbortSignal): Promise<http.IncomingMessage> {
    return this.authenticated({ method: 'GET', pathAndQuery }, signal);
  }

  /**
   * PATCH `path` with an RFC 6902 JSON patch (application/json-patch+json) and resolve with the object
   * the server returns. The same 401 handling as get(); any other status than 2xx is an
   * ApiRequestError carrying it (409 conflict, 422 for a failed `test` operation, 403 refused).
   */
  async patchJson(path: string, patch: readonly unknown[], signal?: AbortSignal): Promise<unknown> {
    const response = await this.authenticated({ method: 'PATCH', pathAndQuery: path, body: JSON.stringify(patch), contentType: 'application/json-patch+json' }, signal);
    return JSON.parse(await readBody(response));
  }

  /**
   * A write (POST, PUT) or a small GET with a JSON body, read whole: resolves with the parsed answer
   * of a 2xx, and rejects with ApiRequestError (its `status` and `reason` say which: 404, 409 Conflict
   * or AlreadyExists...) for anything else. The same one retry on 401 as get().
   */
  async send(method: 'GET' | 'POST' | 'PUT', pathAndQuery: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
    const response = await this.authenticated({ method, pathAndQuery, ...(body === undefined ? {} : { body: JSON.stringify(body) }) }, signal);
    return JSON.parse(await readBody(response));
  }

  private async authenticated(call: Call, signal?: AbortSignal): Promise<http.IncomingMessage> {
    const { method, pathAndQuery } = call;
    const credentials = this.config.credentials;
    const refused = await credentials.token();
    const first = await this.request(call, refused, signal);
    if (first.statusCode !== 401) return this.checked(call, first);
    const firstBody = await readBody(first).catch(() => '');
    credentials.invalidate(refused);
    const fresh = await credentials.token();
    const who = `${credentials.description} (${this.config.source})`;
    if (fresh === refused) {
      this.unauthorized.refused++;
      throw new ApiRequestError(pathAndQuery, 401, firstBody, `the API server refused the token from ${who}, and fetching it afresh gave the same token`, method);
    }
    const second = await this.request(call, fresh, signal);
    if (second.statusCode === 401) {
      this.unauthorized.refused++;
      throw new ApiRequestError(pathAndQuery, 401, await readBody(second).catch(() => ''), `the API server refused the token from ${who}, and again after fetching it afresh`, method);
    }
    this.unauthorized.recovered++;
    this.logger.info({ path: pathAndQuery.split('?')[0], credentials: who }, 'the API server refused the token; fetched afresh, the new one was accepted');
    return this.checked(call, second);
  }

  /** GET and parse a small JSON body (e.g. /version). */
  async getJson(pathAndQuery: string, signal?: AbortSignal): Promise<unknown> {
    const response = await this.get(pathAndQuery, signal);
    return JSON.parse(await readBody(response));
  }

  /**
   * Whether the server understands streaming lists (sendInitialEvents, Kubernetes 1.27 and later):
   * older servers ignore the parameter and would stream the initial events with no end marker. A
   * newer server with the feature off answers the request with an error, and the reflector falls
   * back to paged lists. Asked once.
   */
  offersStreamingLists(signal?: AbortSignal): Promise<boolean> {
    this.streaming ??= this.getJson('/version', signal).then((version) => {
      const minor = typeof version === 'object' && version !== null ? Number.parseInt(String((version as { minor?: unknown }).minor ?? ''), 10) : NaN;
      const major = typeof version === 'object' && version !== null ? Number.parseInt(String((version as { major?: unknown }).major ?? ''), 10) : NaN;
      return major > 1 || (major === 1 && minor >= 27);
    }, (error: unknown) => {
      this.streaming = null;
      throw error;
    });
    return this.streaming;
  }

  close(): void {
    this.agent.destroy();
  }

  private async checked(call: Call, response: http.IncomingMessage): Promise<http.IncomingMessage> {
    const status = response.statusCode ?? 0;
    // A GET (a list, a watch) wants exactly 200; a write may answer 201.
    if (status === 200 || (call.method !== 'GET' && status >= 200 && status < 300)) return response;
    throw new ApiRequestError(call.pathAndQuery, status, await readBody(response).catch(() => ''), undefined, call.method);
  }

  private request(call: Call, token: string | null, signal?: AbortSignal): Promise<http.IncomingMessage> {
    const url = new URL(call.pathAndQuery, this.config.server);
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': USER_AGENT };
    if (token !== null) headers['authorization'] = `Bearer ${token}`;
    if (call.body !== undefined) {
      headers['content-type'] = call.contentType ?? 'application/json';
      headers['content-length'] = String(Buffer.byteLength(call.body));
    }
    const module = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = module.request(url, { method: call.method, headers, agent: this.agent, ...(signal === undefined ? {} : { signal }) }, resolve);
      req.on('error', (error) => reject(new PalisadeError('KUBE_API_UNREACHABLE', `${call.method} ${url.pathname}${url.search} on ${this.config.server.origin}: ${error.message}`, { cause: error })));
      req.end(call.body);
    });
  }
}

export function readBody(response: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    response.on('data', (chunk: Buffer) => chunks.push(chunk));
    response.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    response.on('error', reject);
  });
}
