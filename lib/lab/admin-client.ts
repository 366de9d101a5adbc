import { request } from 'node:http';
import { PalisadeError } from '../errors.js';
import type { FakeApiStats, StoredObject } from './api-server.js';
import type { BoundIdentity } from './node-admission.js';

/**
 * The lab API server's admin API, reached over its unix socket: a socket file works across network
 * namespaces, so the process driving the lab never needs a route into them.
 */
export class LabApiClient {
  readonly socketPath: string;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  apply(objects: Record<string, unknown> | readonly Record<string, unknown>[]): Promise<unknown> {
    return this.call('POST', 'apply', objects);
  }

  delete(kind: string, namespace: string | null, name: string): Promise<unknown> {
    return this.call('POST', 'delete', { kind, namespace, name });
  }

  /** The Kubernetes API goes away for `ms` and comes back with its data, as after a restart. */
  outage(ms: number): Promise<unknown> {
    return this.call('POST', 'outage', { ms });
  }

  closeWatches(): Promise<unknown> {
    return this.call('POST', 'close-watches', {});
  }

  /**
   * The bearer tokens the API server accepts from now on (null: any request); with
   * `closeRefusedWatches`, watches opened with a token no longer accepted end, as at their timeout.
   * Resolves with how many ended.
   */
  async setTokens(tokens: readonly string[] | null, options: { closeRefusedWatches?: boolean } = {}): Promise<number> {
    const answer = await this.call('POST', 'tokens', { tokens, closeRefusedWatches: options.closeRefusedWatches === true });
    return (answer as { closedWatches: number }).closedWatches;
  }

  /**
   * The next Kubernetes API requests whose path and query match `path` (a regular expression's
   * source) fail with `status`, `times` times or until cleared with null.
   */
  async setFailure(rule: { status: number; path?: string; times?: number } | null): Promise<void> {
    await this.call('POST', 'failure', rule);
  }

  /**
   * Installs or removes the CustomResourceDefinition of `kind` (ClusterNetworkPolicy): while removed
   * its paths answer 404 and discovery leaves it out, and removing it deletes its objects.
   */
  async setCrdInstalled(kind: string, installed: boolean): Promise<void> {
    await this.call('POST', 'crd', { kind, installed });
  }

  /** Accepts `token` as `identity` from now on: a service account, and the node its pod runs on. */
  async bindToken(token: string, identity: BoundIdentity): Promise<void> {
    await this.call('POST', 'bind-token', { token, username: identity.username, nodeName: identity.nodeName });
  }

  /**
   * A Kubernetes API request over the socket, with `token` as its bearer token, as a client holding
   * that token would send it: for checking what the API server lets a token do.
   */
  kube(method: 'GET' | 'PATCH' | 'PUT' | 'POST' | 'DELETE', pathAndQuery: string, token: string | null, body?: { text: string; contentType: string }): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { accept: 'application/json' };
      if (token !== null) headers['authorization'] = `Bearer ${token}`;
      if (body !== undefined) headers['content-type'] = body.contentType;
      const req = request({ socketPath: this.socketPath, path: pathAndQuery, method, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      });
      req.on('error', (error) => reject(new PalisadeError('LAB_API', `${method} ${pathAndQuery} over ${this.socketPath}: ${error.message}`, { cause: error })));
      req.end(body?.text);
    });
  }

  /** The objects of a kind as stored now (optionally one namespace's), e.g. the Events palisade wrote. */
  objects(kind: string, namespace: string | null = null): Promise<StoredObject[]> {
    const query = new URLSearchParams({ kind, ...(namespace === null ? {} : { namespace }) });
    return this.call('GET', `objects?${query.toString()}`, undefined) as Promise<StoredObject[]>;
  }

  stats(): Promise<FakeApiStats> {
    return this.call('GET', 'stats', undefined) as Promise<FakeApiStats>;
  }

  private call(method: string, route: string, body: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socketPath, path: `/fake/${route}`, method, headers: { 'content-type': 'application/json' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) reject(new PalisadeError('LAB_API', `lab API ${route}: HTTP ${res.statusCode}: ${text.slice(0, 300)}`));
          else resolve(text === '' ? null : JSON.parse(text));
        });
      });
      req.on('error', (error) => reject(new PalisadeError('LAB_API', `lab API ${route} over ${this.socketPath}: ${error.message}`, { cause: error })));
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }
}
