/**
 * An embedded Kubernetes API server for the lab (the demo and the end-to-end tests): plain HTTP on
 * loopback or a lab link (and optionally a unix socket), real list/watch semantics, good enough for
 * @kubernetes/client-node's KubeConfig, Watch, generated API clients and informers to work against it
 * unchanged. It stores objects and serves them; it validates and schedules nothing.
 *
 *   const server = await FakeApiServer.start({ bookmarkIntervalMs: 1000 });
 *   const kc = new k8s.KubeConfig(); kc.loadFromString(server.kubeconfig());
 *   server.apply(pod('default', 'a'));      // ADDED, then MODIFIED on the next apply
 *   server.compact();                        // watches from older resourceVersions now get 410
 *   await server.close();
 *
 * Kinds: Pod, Namespace, Node, NetworkPolicy, the two palisade writes: Lease and Event, and
 * ClusterNetworkPolicy, a custom resource (RESOURCES). One global resourceVersion like etcd's;
 * metadata.generation goes up when anything but metadata and status changes.
 * Paths: {prefix}/{plural}[/{name}[/status]], {prefix}/namespaces/{ns}/{plural}[/{name}[/status]], the
 * legacy {prefix}/watch/... form, plus /healthz /livez /readyz /version and the discovery documents
 * (/api, /api/v1, /apis, /apis/{group}[/{version}]: discovery.ts). GET; PATCH of a Node with a JSON
 * patch; and for the writable kinds (Lease, Event, ClusterNetworkPolicy) POST to create (409
 * AlreadyExists when the name is taken), PUT to replace (404 when absent, 409 Conflict when
 * metadata.resourceVersion is not the stored one), PATCH with a JSON patch or a JSON merge patch (the
 * same resourceVersion precondition) and DELETE; else 405. A kind with the status subresource keeps its
 * status through writes to the object and changes only its status through writes to .../status; a
 * write that changes nothing is answered with the stored object and no new resourceVersion. A kind
 * defined by a CRD (ClusterNetworkPolicy) is served, and named by discovery, only while its CRD is
 * installed (options.crds, setCrdInstalled): otherwise its paths answer 404, as a real API server's
 * do; removing the CRD deletes its objects and ends its watches. Bearer token required when options.token is set (the default; kubeconfig()
 * carries it), or one of options.tokens, or a token bound to an identity (bindToken: a service
 * account and the node its pod runs on, as bound service-account tokens carry); anything else gets
 * 401 with an Unauthorized Status, as from a real API server. A node PATCH by palisade's service
 * account passes the lab's stand-in for its ValidatingAdmissionPolicy (node-admission.ts) or gets 403.
 * setTokens() rotates the accepted set (see there for what happens to open watches). labelSelector is
 * refused with 400 rather than silently ignored; fieldSelector filters lists and watches
 * (field-selector.ts). Lists page with limit/continue.
 * Watches (?watch=true|1): resourceVersion '' or '0' (or sendInitialEvents=true) first sends ADDED
 * for every current object; N replays history events with RV > N, or a single 410 Expired ERROR
 * event when N is older than the retained history. allowWatchBookmarks=true gets BOOKMARK events
 * every bookmarkIntervalMs and on bookmark(); timeoutSeconds ends the stream cleanly.
 * The admin HTTP API lives under /fake/ (see admin()); it needs no token and is never failed.
 */
import { randomUUID } from 'node:crypto';
import { unlink } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, ListenOptions } from 'node:net';
import { AcceptedTokens, bearerToken } from './bearer-tokens.js';
import { applyJsonPatch, applyMergePatch, JsonPatchError, jsonEqual } from './json-patch.js';
import { discoveryDocument } from './discovery.js';
import { admitNodeUpdate, PALISADE_NODE_TAINT_POLICY } from './node-admission.js';
import type { BoundIdentity, NodeTaintPolicy } from './node-admission.js';
import { fieldsMatch, parseFieldSelector } from './field-selector.js';
import type { FieldRequirement } from './field-selector.js';

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  generation?: number;
  [key: string]: unknown;
}
export interface KubeObject { apiVersion?: string; kind?: string; metadata?: ObjectMeta; [key: string]: unknown }
/** An object as stored and served: kind, apiVersion, name, uid and resourceVersion always set. */
export interface StoredObject extends KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta & { name: string; uid: string; resourceVersion: string; creationTimestamp: string };
}

export interface FakeApiServerOptions {
  /** Loopback address to listen on; default 127.0.0.1. */
  host?: string;
  /** 0 (default) picks a free port; restart() reuses whatever port was picked. */
  port?: number;
  /** Also listen on this unix socket (same handler), for tests in other network namespaces. */
  socketPath?: string;
  /** Periodic BOOKMARK events on watches that asked for them; 0 disables; default 1000. */
  bookmarkIntervalMs?: number;
  /** Watch events kept for replay; older resourceVersions get 410 Expired. Default 1000. */
  historyLimit?: number;
  /** Ends every watch this soon after it starts, whatever its timeoutSeconds (a misbehaving server or proxy). */
  endWatchesAfterMs?: number;
  /** Bearer token the kube API requires (kubeconfig() uses it); null disables auth. Default 'fake-token'. */
  token?: string | null;
  /** Bearer tokens the kube API accepts, any of them (kubeconfig() uses the first); overrides `token`. */
  tokens?: readonly string[];
  /** Serve HTTPS on the TCP listener with this certificate (PEM); the unix socket stays plain HTTP. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /**
   * Whether streaming lists (watch with sendInitialEvents=true) are offered, as with the WatchList
   * feature on (Kubernetes 1.32 and later); when false they are refused with 422, as a server with the
   * feature off does. Default true.
   */
  watchList?: boolean;
  /**
   * Whether a list with resourceVersion=0 honours `limit`; when false it is served whole, as the watch
   * caches of servers before 1.33 do. Default true.
   */
  pageCachedLists?: boolean;
  /** The admission policy node PATCHes pass; default palisade's (PALISADE_NODE_TAINT_POLICY); null: none. */
  nodeTaintPolicy?: NodeTaintPolicy | null;
  /** Kinds defined by a CRD whose CRD is installed from the start (e.g. ['ClusterNetworkPolicy']); default none. */
  crds?: readonly string[];
}
export interface FailureRule {
  /** Tested against pathname + query string; absent matches every kube API request. */
  path?: RegExp;
  status: number;
  /** How many matching requests fail; absent = until setFailure(null). */
  times?: number;
}
export interface FakeApiStats {
  /** Successful-routing list requests per plural ('pods', 'namespaces', 'networkpolicies', 'nodes'). */
  lists: Record<string, number>;
  /** Watch requests per plural (including ones answered with 410). */
  watches: Record<string, number>;
  /**
   * Watches per plural that began by sending every current object: streaming lists
   * (sendInitialEvents=true) and watches from resourceVersion "" or "0". Lists in all but name, so
   * lists + streamingLists is what a relist costs; also counted in `watches`.
   */
  streamingLists: Record<string, number>;
  /** Requests refused with 401, per plural (or path, for /version and the like); in no other count. */
  unauthorized: Record<string, number>;
  openWatches: number;
  /** Requests answered by an injected failure (setFailure), not counted in lists/watches. */
  failures: number;
  /** Bytes of kube API response bodies sent (lists, watch events, single objects), admin API left out. */
  bytesSent: number;
  /** PATCH requests per plural and name ('nodes/node-a', 'clusternetworkpolicies/x/status'), whatever their answer. */
  patches: Record<string, number>;
  /** PATCH requests the admission policy refused (403). */
  forbidden: number;
  /**
   * Writes accepted, per "POST plural", "PUT plural", "PATCH plural", "DELETE plural" (with "/status" for
   * the subresource); refused ones and ones that changed nothing are not counted.
   */
  writes: Record<string, number>;
}

export interface Resource {
  kind: string;
  apiVersion: string;
  plural: string;
  prefix: string;
  namespaced: boolean;
  /** Created, replaced, patched and deleted through the kube API (else only read, and a Node patched). */
  writable?: boolean;
  /** Defined by a CustomResourceDefinition: served (paths and discovery) only while it is installed (setCrdInstalled). */
  crd?: boolean;
  /** Has the status subresource: writes to the object keep its status, writes to .../status change only the status. */
  statusSubresource?: boolean;
  shortNames?: readonly string[];
}
export const RESOURCES: readonly Resource[] = [
  { kind: 'Pod', apiVersion: 'v1', plural: 'pods', prefix: '/api/v1', namespaced: true },
  { kind: 'Namespace', apiVersion: 'v1', plural: 'namespaces', prefix: '/api/v1', namespaced: false },
  { kind: 'Node', apiVersion: 'v1', plural: 'nodes', prefix: '/api/v1', namespaced: false },
  { kind: 'NetworkPolicy', apiVersion: 'networking.k8s.io/v1', plural: 'networkpolicies', prefix: '/apis/networking.k8s.io/v1', namespaced: true },
  { kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', plural: 'leases', prefix: '/apis/coordination.k8s.io/v1', namespaced: true, writable: true },
  { kind: 'Event', apiVersion: 'v1', plural: 'events', prefix: '/api/v1', namespaced: true, writable: true },
  {
    kind: 'ClusterNetworkPolicy', apiVersion: 'policy.networking.k8s.io/v1alpha2', plural: 'clusternetworkpolicies', prefix: '/apis/policy.networking.k8s.io/v1alpha2',
    namespaced: false, writable: true, crd: true, statusSubresource: true, shortNames: ['cnp'],
  },
];

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';
interface HistoryEvent { type: EventType; rv: number; resource: Resource; object: StoredObject }
interface Watcher {
  res: http.ServerResponse;
  resource: Resource;
  namespace: string | null;
  bookmarks: boolean;
  fields: FieldRequirement[] | null;
  /** The bearer token the watch was opened with: what was authenticated, once, at its start. */
  token: string | null;
  timer?: NodeJS.Timeout;
}
interface Route { resource: Resource; namespace: string | null; name: string | null; watch: boolean; status: boolean }

const REASONS: Record<number, string> = {
  400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed', 409: 'Conflict',
  410: 'Expired', 422: 'Invalid', 429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout',
};

/** A metav1.Status failure, as the API server sends in error bodies and ERROR watch events. */
export function statusObject(code: number, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason: REASONS[code] ?? 'Unknown', code };
}

export function resourceFor(kindOrPlural: string): Resource {
  const key = kindOrPlural.toLowerCase();
  const r = RESOURCES.find((x) => x.kind.toLowerCase() === key || x.plural === key);
  if (r === undefined) throw new Error(`fake apiserver: unknown kind "${kindOrPlural}" (known: ${RESOURCES.map((x) => x.kind).join(', ')})`);
  return r;
}

const clone = <T>(value: T): T => structuredClone(value);

/** What a write may change: everything ('all': the admin's apply), all but the status ('object'), or only the status. */
type WriteScope = 'all' | 'object' | 'status';

/** Everything but metadata and status: what metadata.generation counts changes of. */
function specOf(object: KubeObject): Record<string, unknown> {
  const { metadata: _metadata, status: _status, kind: _kind, apiVersion: _apiVersion, ...spec } = object;
  return spec;
}

/** `clusternetworkpolicies.policy.networking.k8s.io "x"`, as the API server names an object in its messages. */
function describeObject(resource: Resource, name: string): string {
  return `${resource.plural}${resource.prefix === '/api/v1' ? '' : `.${resource.prefix.split('/')[2]}`} "${name}"`;
}

/** A kubeconfig (YAML) for the lab API server at `serverUrl`, authenticating with a token, a token file, or nothing. */
export function labKubeconfig(serverUrl: string, user: { token?: string | null; tokenFile?: string }): string {
  const token = user.token ?? null;
  const userYaml = user.tokenFile !== undefined ? `  user:\n    tokenFile: ${JSON.stringify(user.tokenFile)}` : token === null ? '  user: {}' : `  user:\n    token: ${JSON.stringify(token)}`;
  return [
    'apiVersion: v1', 'kind: Config', 'preferences: {}', 'current-context: fake',
    'clusters:', '- name: fake', '  cluster:', `    server: ${JSON.stringify(serverUrl)}`, '    insecure-skip-tls-verify: true',
    'users:', '- name: fake', userYaml,
    'contexts:', '- name: fake', '  context:', '    cluster: fake', '    user: fake', '',
  ].join('\n');
}
const nowTimestamp = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

export class FakeApiServer {
  /** Snapshots of lists being read in pages, by continue token. */
  private readonly pages = new Map<string, { items: StoredObject[]; rv: number; offset: number }>();
  private rv = 1000;
  /** The oldest resourceVersion a watch may start from; older ones get 410 Expired. */
  private minWatchRv = this.rv;
  private readonly objects = new Map<string, StoredObject>();
  private readonly json = new WeakMap<object, string>();
  private readonly itemJson = new WeakMap<object, string>();
  private history: HistoryEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private servers: http.Server[] = [];
  private failure: (FailureRule & { left: number }) | null = null;
  private counts: FakeApiStats = { lists: {}, watches: {}, streamingLists: {}, unauthorized: {}, openWatches: 0, failures: 0, bytesSent: 0, patches: {}, forbidden: 0, writes: {} };
  private readonly accepted: AcceptedTokens;
  /** Tokens bound to an identity (bindToken): accepted, and judged by the admission policy. */
  private readonly identities = new Map<string, BoundIdentity>();
  /** Kinds whose CRD is installed: served now. */
  private readonly crds = new Set<string>();
  private readonly log: string[] = [];
  private bookmarkTimer: NodeJS.Timeout | undefined;
  private host: string;
  private port: number;
  private readonly options: FakeApiServerOptions;

  private constructor(options: FakeApiServerOptions) {
    this.options = options;
    this.host = options.host ?? '127.0.0.1';
    this.port = options.port ?? 0;
    const token = options.token === undefined ? 'fake-token' : options.token;
    this.accepted = new AcceptedTokens(options.tokens ?? (token === null ? null : [token]));
    for (const kind of options.crds ?? []) this.setCrdInstalled(kind, true);
  }

  static async start(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const server = new FakeApiServer(options);
    await server.listen();
    const interval = options.bookmarkIntervalMs ?? 1000;
    if (interval > 0) server.bookmarkTimer = setInterval(() => server.bookmark(), interval).unref();
    return server;
  }

  get url(): string {
    return `${this.options.tls === undefined ? 'http' : 'https'}://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }
  /** The current global resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }
  get running(): boolean {
    return this.servers.length > 0;
  }

  /**
   * Creates or replaces (by kind, namespace, name); emits ADDED or MODIFIED; returns the stored object.
   * A kind with the status subresource keeps its stored status when `input` has none, as `kubectl
   * apply` never writes it. A kind defined by a CRD needs the CRD installed.
   */
  apply(input: KubeObject): StoredObject {
    return this.store(input, 'all');
  }

  private store(input: KubeObject, scope: WriteScope): StoredObject {
    const resource = resourceFor(input.kind ?? '');
    if (resource.crd === true && !this.crds.has(resource.kind)) throw new Error(`fake apiserver: no ${resource.kind} is served while its CRD is not installed`);
    const { apiVersion: _apiVersion, kind: _kind, metadata: given = {}, ...givenRest } = clone(input);
    if (typeof given.name !== 'string' || given.name === '') throw new Error(`fake apiserver: ${resource.kind} without metadata.name`);
    if (resource.namespaced) given.namespace ??= 'default';
    else delete given.namespace;
    const key = this.key(resource, given.namespace ?? null, given.name);
    const prev = this.objects.get(key);
    let meta: ObjectMeta = given;
    let rest: Record<string, unknown> = givenRest;
    if (resource.statusSubresource === true) {
      if (scope === 'status') {
        // Only the status is written; metadata and spec stay as stored.
        if (prev === undefined) throw new Error(`fake apiserver: ${describeObject(resource, given.name)} not found`);
        meta = prev.metadata;
        rest = { ...specOf(prev), ...(givenRest['status'] === undefined ? {} : { status: givenRest['status'] }) };
      } else if (scope === 'object' || !Object.hasOwn(givenRest, 'status')) {
        delete rest['status'];
        if (prev?.status !== undefined) rest['status'] = prev.status;
      }
    }
    const specChanged = prev === undefined || !jsonEqual(specOf(prev), specOf(rest));
    const generation = prev === undefined ? 1 : (prev.metadata.generation ?? 0) + (specChanged ? 1 : 0);
    const candidate = {
      apiVersion: resource.apiVersion, kind: resource.kind,
      metadata: {
        ...meta,
        name: given.name,
        uid: prev?.metadata.uid ?? meta.uid ?? randomUUID(),
        resourceVersion: prev?.metadata.resourceVersion ?? '',
        creationTimestamp: prev?.metadata.creationTimestamp ?? meta.creationTimestamp ?? nowTimestamp(),
        generation,
      },
      ...rest,
    };
    // As the API server does, a write through the API that changes nothing writes nothing.
    if (scope !== 'all' && prev !== undefined && jsonEqual(candidate, prev)) return clone(prev);
    this.rv += 1;
    const obj: StoredObject = { ...candidate, metadata: { ...candidate.metadata, resourceVersion: String(this.rv) } };
    this.objects.set(key, obj);
    // Serialised now, as a real API server's watch cache keeps objects ready to send.
    this.serialized(obj);
    this.emit(prev === undefined ? 'ADDED' : 'MODIFIED', resource, obj);
    return clone(obj);
  }

  /** Removes the object; emits DELETED carrying its last state with a new resourceVersion. */
  delete(kind: string, namespace: string | null, name: string): boolean {
    const resource = resourceFor(kind);
    const key = this.key(resource, namespace, name);
    const prev = this.objects.get(key);
    if (prev === undefined) return false;
    this.objects.delete(key);
    this.rv += 1;
    this.emit('DELETED', resource, { ...prev, metadata: { ...prev.metadata, resourceVersion: String(this.rv) } });
    return true;
  }

  get(kind: string, namespace: string | null, name: string): StoredObject | undefined {
    const obj = this.objects.get(this.key(resourceFor(kind), namespace, name));
    return obj === undefined ? undefined : clone(obj);
  }

  /** Current objects of a kind (optionally one namespace), in the API server's key order. */
  list(kind: string, namespace: string | null = null): StoredObject[] {
    const resource = resourceFor(kind);
    return [...this.objects.entries()]
      .filter(([, o]) => o.kind === resource.kind && (namespace === null || o.metadata.namespace === namespace))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => clone(o));
  }

  /** Drops the whole event history: a watch from any resourceVersion before now gets 410 Expired. */
  compact(): void {
    this.pages.clear();
    this.history = [];
    this.minWatchRv = this.rv;
  }

  /** Sends a BOOKMARK at the current resourceVersion on every watch that allowed bookmarks. */
  bookmark(): void {
    for (const w of this.watchers) if (w.bookmarks) this.sendBookmark(w);
  }

  /** Ends every open watch stream cleanly (clients see the stream end, as on an API server rollout). */
  closeWatches(): void {
    for (const w of [...this.watchers]) this.endWatch(w);
  }

  /** Makes the next matching kube API requests fail with `status` (a Status body); null clears. */
  setFailure(rule: FailureRule | null): void {
    this.failure = rule === null ? null : { ...rule, left: rule.times ?? Infinity };
  }

  /**
   * Accepts these bearer tokens from now on (null: no authentication), as when a token expires or a
   * new one is issued. A real API server authenticates a watch once, when it starts, and lets it run to
   * its timeout however long its token lives; so open watches are left alone by default. With
   * `closeRefusedWatches`, those opened with a token no longer accepted end cleanly, as at their
   * timeout: the moment a client must authenticate again, brought forward. Returns how many ended.
   */
  setTokens(tokens: readonly string[] | null, options: { closeRefusedWatches?: boolean } = {}): number {
    this.accepted.replace(tokens);
    if (options.closeRefusedWatches !== true) return 0;
    const refused = [...this.watchers].filter((w) => !this.accepted.accepts(w.token));
    for (const w of refused) this.endWatch(w);
    return refused.length;
  }

  /**
   * Accepts `token` from now on as `identity`, as the API server accepts a bound service-account
   * token for the pod's service account and node; setTokens() leaves it alone.
   */
  bindToken(token: string, identity: BoundIdentity): void {
    this.identities.set(token, identity);
  }

  /**
   * Installs or removes the CRD of a kind defined by one (ClusterNetworkPolicy). While removed, its
   * paths answer 404 and discovery leaves it out; removing it deletes its objects (each watch of the
   * kind sees DELETED) and then ends its watches, as deleting a CustomResourceDefinition does.
   */
  setCrdInstalled(kind: string, installed: boolean): void {
    const resource = resourceFor(kind);
    if (resource.crd !== true) throw new Error(`fake apiserver: ${resource.kind} is built in, not defined by a CRD`);
    if (installed) {
      this.crds.add(resource.kind);
      return;
    }
    if (!this.crds.has(resource.kind)) return;
    for (const obj of this.list(resource.kind)) this.delete(resource.kind, obj.metadata.namespace ?? null, obj.metadata.name);
    this.crds.delete(resource.kind);
    for (const w of [...this.watchers]) if (w.resource === resource) this.endWatch(w);
  }

  crdInstalled(kind: string): boolean {
    return this.crds.has(resourceFor(kind).kind);
  }

  /** Whether the path is under the prefix of a group version served now (what is not gets 404, whatever the method). */
  private servesPath(pathname: string): boolean {
    return this.served().some((r) => pathname.startsWith(`${r.prefix}/`));
  }

  /** The resources served now: the built-in ones and those whose CRD is installed. */
  private served(): Resource[] {
    return RESOURCES.filter((r) => r.crd !== true || this.crds.has(r.kind));
  }

  stats(): FakeApiStats {
    return {
      lists: { ...this.counts.lists },
      watches: { ...this.counts.watches },
      streamingLists: { ...this.counts.streamingLists },
      unauthorized: { ...this.counts.unauthorized },
      openWatches: this.watchers.size,
      failures: this.counts.failures,
      bytesSent: this.counts.bytesSent,
      patches: { ...this.counts.patches },
      forbidden: this.counts.forbidden,
      writes: { ...this.counts.writes },
    };
  }

  /** The last 1000 kube API requests (not /fake/ ones) as "GET /api/v1/pods?watch=true&...", oldest first. */
  requests(): string[] {
    return [...this.log];
  }

  /**
   * A kubeconfig (YAML) for `serverUrl` (default: this.url): insecure-skip-tls-verify, and a user with
   * the first accepted token, or with `tokenFile` when given (a file the caller keeps the token in).
   */
  kubeconfig(serverUrl: string = this.url, user: { tokenFile?: string } = {}): string {
    return labKubeconfig(serverUrl, user.tokenFile !== undefined ? { tokenFile: user.tokenFile } : { token: this.accepted.first() });
  }

  /** Kills the listeners and every connection (new connections are refused); the data stays. */
  async stop(): Promise<void> {
    const servers = this.servers;
    this.servers = [];
    await Promise.all(servers.map((s) => {
      const closed = new Promise<void>((resolve) => s.close(() => resolve()));
      s.closeAllConnections();
      return closed;
    }));
    this.watchers.clear();
  }

  /** Listens again on the same port (and socket), with the same objects and history. */
  async restart(): Promise<void> {
    if (!this.running) await this.listen();
  }

  async close(): Promise<void> {
    clearInterval(this.bookmarkTimer);
    await this.stop();
    if (this.options.socketPath !== undefined) await unlink(this.options.socketPath).catch(() => undefined);
  }

  /**
   * An outage of the Kubernetes API as a restart of a real API server looks from outside: the TCP
   * listener and every connection on it go away, and come back after `ms` on the same port with the
   * same objects and resourceVersions. The unix-socket admin API stays up throughout.
   */
  async outage(ms: number): Promise<void> {
    const tcp = this.servers[0];
    if (tcp === undefined) return;
    await new Promise<void>((resolve) => {
      tcp.close(() => resolve());
      tcp.closeAllConnections();
    });
    this.watchers.clear();
    await new Promise((resolve) => setTimeout(resolve, ms));
    const unix = this.servers.slice(1);
    const make = this.createServer(true);
    await new Promise<void>((resolve, reject) => {
      make.once('error', reject);
      make.listen({ port: this.port, host: this.host }, () => { make.off('error', reject); resolve(); });
    });
    this.servers = [make, ...unix];
  }

  private async listen(): Promise<void> {
    const listenOn = (s: http.Server, target: ListenOptions): Promise<void> => new Promise((resolve, reject) => {
      s.once('error', reject);
      s.listen(target, () => { s.off('error', reject); resolve(); });
    });
    const tcp = this.createServer(true);
    await listenOn(tcp, { port: this.port, host: this.host });
    this.port = (tcp.address() as AddressInfo).port;
    this.servers = [tcp];
    const socketPath = this.options.socketPath;
    if (socketPath !== undefined) {
      await unlink(socketPath).catch(() => undefined);
      const unix = this.createServer(false);
      await listenOn(unix, { path: socketPath });
      this.servers.push(unix);
    }
  }

  private createServer(tcp: boolean): http.Server {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => void this.handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) this.sendJson(res, 500, statusObject(500, String(err)));
      else res.destroy();
    });
    const tls = this.options.tls;
    const server = tcp && tls !== undefined ? https.createServer({ cert: tls.cert, key: tls.key }, handler) : http.createServer(handler);
    server.requestTimeout = 0;
    return server;
  }

  private key(resource: Resource, namespace: string | null, name: string): string {
    return `${resource.plural}/${resource.namespaced ? namespace ?? 'default' : ''}/${name}`;
  }

  private emit(type: EventType, resource: Resource, object: StoredObject): void {
    const event: HistoryEvent = { type, rv: Number(object.metadata.resourceVersion), resource, object };
    this.history.push(event);
    const limit = this.options.historyLimit ?? 1000;
    while (this.history.length > limit) {
      const dropped = this.history.shift();
      if (dropped !== undefined) this.minWatchRv = dropped.rv;
    }
    for (const w of this.watchers) if (this.matches(w, resource, object)) this.send(w, type, object);
  }

  private matches(w: Watcher, resource: Resource, object: StoredObject): boolean {
    return w.resource === resource && (w.namespace === null || w.namespace === object.metadata.namespace) && fieldsMatch(w.fields, object);
  }

  private send(w: Watcher, type: string, object: unknown): void {
    if (w.res.writableEnded || w.res.destroyed) return;
    const line = `{"type":${JSON.stringify(type)},"object":${this.serialized(object)}}\n`;
    this.counts.bytesSent += Buffer.byteLength(line);
    w.res.write(line);
  }

  /** Stored objects are never changed in place (apply replaces them), so their JSON is made once. */
  private serialized(object: unknown): string {
    if (typeof object !== 'object' || object === null) return JSON.stringify(object);
    let text = this.json.get(object);
    if (text === undefined) {
      text = JSON.stringify(object);
      this.json.set(object, text);
    }
    return text;
  }

  private listItem(object: StoredObject): string {
    let text = this.itemJson.get(object);
    if (text === undefined) {
      const { kind: _kind, apiVersion: _apiVersion, ...item } = object;
      text = JSON.stringify(item);
      this.itemJson.set(object, text);
    }
    return text;
  }

  /** Current objects of a resource in key order, as stored (not copied): for sending only. */
  private stored(resource: Resource, namespace: string | null): StoredObject[] {
    return [...this.objects.entries()]
      .filter(([, o]) => o.kind === resource.kind && (namespace === null || o.metadata.namespace === namespace))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => o);
  }

  private sendBookmark(w: Watcher, annotations?: Record<string, string>): void {
    const metadata = { resourceVersion: String(this.rv), ...(annotations === undefined ? {} : { annotations }) };
    this.send(w, 'BOOKMARK', { kind: w.resource.kind, apiVersion: w.resource.apiVersion, metadata });
  }

  private endWatch(w: Watcher): void {
    this.watchers.delete(w);
    clearTimeout(w.timer);
    if (!w.res.writableEnded && !w.res.destroyed) w.res.end();
  }

  private sendJson(res: http.ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}, admin = false): void {
    const text = JSON.stringify(body);
    if (!admin) this.counts.bytesSent += Buffer.byteLength(text);
    res.writeHead(code, { 'content-type': 'application/json', ...headers });
    res.end(text);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake.invalid');
    if (url.pathname.startsWith('/fake/')) return this.admin(req, res, url);
    this.log.push(`${req.method ?? 'GET'} ${url.pathname}${url.search}`);
    if (this.log.length > 1000) this.log.shift();
    const fail = this.failure;
    if (fail !== null && fail.left > 0 && (fail.path === undefined || fail.path.test(url.pathname + url.search))) {
      fail.left -= 1;
      this.counts.failures += 1;
      const retry: Record<string, string> = fail.status === 429 || fail.status === 503 ? { 'retry-after': '1' } : {};
      return this.sendJson(res, fail.status, statusObject(fail.status, `fake apiserver: injected failure for ${url.pathname}`), retry);
    }
    if (['/healthz', '/livez', '/readyz'].includes(url.pathname)) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      return void res.end('ok');
    }
    const presented = bearerToken(req.headers.authorization);
    if (!this.accepted.accepts(presented) && !(presented !== null && this.identities.has(presented))) {
      const plural = this.route(url.pathname)?.resource.plural ?? url.pathname;
      this.counts.unauthorized[plural] = (this.counts.unauthorized[plural] ?? 0) + 1;
      return this.sendJson(res, 401, statusObject(401, 'Unauthorized'));
    }
    if (req.method === 'PATCH') return this.patch(req, res, url.pathname, presented);
    const writeRoute = this.route(url.pathname);
    if (writeRoute?.resource.writable === true && !writeRoute.watch) {
      if (req.method === 'POST' || (req.method === 'PUT' && (!writeRoute.status || writeRoute.name !== null))) return this.write(req, res, writeRoute);
      if (req.method === 'DELETE') return this.remove(res, writeRoute);
    }
    if (req.method !== 'GET' && writeRoute === null && !this.servesPath(url.pathname)) return this.sendJson(res, 404, statusObject(404, `the server could not find the requested resource (${url.pathname})`));
    if (req.method !== 'GET') return this.sendJson(res, 405, statusObject(405, `the server does not allow this method on the requested resource (${req.method} ${url.pathname})`));
    if (url.pathname === '/version') return this.sendJson(res, 200, { major: '1', minor: '33', gitVersion: 'v1.33.0-fake', platform: 'linux/amd64' });
    const discovery = discoveryDocument(url.pathname, this.served());
    if (discovery !== null) return this.sendJson(res, 200, discovery);
    const route = this.route(url.pathname);
    if (route === null) return this.sendJson(res, 404, statusObject(404, `the server could not find the requested resource (${url.pathname})`));
    const q = url.searchParams;
    if ((q.get('labelSelector') ?? '') !== '') return this.sendJson(res, 400, statusObject(400, 'fake apiserver: labelSelector is not supported'));
    let fields: FieldRequirement[] | null;
    try {
      fields = parseFieldSelector(q.get('fieldSelector') ?? '');
    } catch (error) {
      return this.sendJson(res, 400, statusObject(400, error instanceof Error ? error.message : String(error)));
    }
    const { resource, namespace, name } = route;
    if (name !== null) {
      const obj = this.objects.get(this.key(resource, namespace, name));
      if (obj === undefined) return this.sendJson(res, 404, statusObject(404, `${resource.plural} "${name}" not found`));
      return this.sendJson(res, 200, obj);
    }
    const rvParam = q.get('resourceVersion') ?? '';
    if (rvParam !== '' && !/^\d+$/.test(rvParam)) return this.sendJson(res, 400, statusObject(400, `Invalid value: "${rvParam}": strconv.ParseUint: parsing "${rvParam}": invalid syntax`));
    if (route.watch || q.get('watch') === 'true' || q.get('watch') === '1') return this.watch(res, route, q, presented, fields);
    this.sendList(res, resource, namespace, q, fields);
  }

  /**
   * POST (create) on a collection, PUT (replace) on an object or its status, of the writable kinds: the
   * checks a real API server makes that clients depend on, and no validation beyond them.
   */
  private async write(req: http.IncomingMessage, res: http.ServerResponse, route: Route): Promise<void> {
    const { resource, namespace, name } = route;
    let body: KubeObject;
    try {
      body = JSON.parse(await readText(req)) as KubeObject;
    } catch (error) {
      return this.sendJson(res, 400, statusObject(400, `invalid JSON: ${error instanceof Error ? error.message : String(error)}`));
    }
    const meta = { ...(body.metadata ?? {}) };
    if (resource.namespaced && namespace === null) return this.sendJson(res, 405, statusObject(405, `${resource.plural} are written in a namespace`));
    if (resource.namespaced && meta.namespace !== undefined && meta.namespace !== namespace) return this.sendJson(res, 400, statusObject(400, `the namespace of the provided object (${meta.namespace}) does not match the namespace sent on the request (${namespace})`));
    if (req.method === 'POST' && name !== null) return this.sendJson(res, 405, statusObject(405, `POST goes to the collection, not to ${resource.plural}/${name}`));
    if (req.method === 'PUT' && name === null) return this.sendJson(res, 405, statusObject(405, `PUT goes to an object of ${resource.plural}`));
    if (meta.name === undefined && req.method === 'POST' && typeof meta['generateName'] === 'string') meta.name = `${meta['generateName']}${randomUUID().slice(0, 5)}`;
    if (typeof meta.name !== 'string' || meta.name === '') return this.sendJson(res, 422, statusObject(422, `${resource.kind}: metadata.name: Required value`));
    if (name !== null && meta.name !== name) return this.sendJson(res, 400, statusObject(400, `the name of the object (${meta.name}) does not match the name on the URL (${name})`));
    const existing = this.objects.get(this.key(resource, namespace, meta.name));
    const what = describeObject(resource, meta.name);
    if (req.method === 'POST' && existing !== undefined) return this.sendJson(res, 409, { ...statusObject(409, `${what} already exists`), reason: 'AlreadyExists' });
    if (req.method === 'PUT') {
      if (existing === undefined) return this.sendJson(res, 404, statusObject(404, `${what} not found`));
      if (meta.resourceVersion !== undefined && meta.resourceVersion !== existing.metadata.resourceVersion) return this.sendConflict(res, what);
    }
    const { resourceVersion: _rv, uid: _uid, creationTimestamp: _created, generation: _generation, ...kept } = meta;
    this.finishWrite(res, route, req.method === 'POST' ? 201 : 200, existing, { ...body, kind: resource.kind, metadata: { ...kept, ...(resource.namespaced && namespace !== null ? { namespace } : {}) } });
  }

  /** Stores a write through the API, counts it when it changed something, and answers with the object. */
  private finishWrite(res: http.ServerResponse, route: Route, code: number, before: StoredObject | undefined, object: KubeObject): void {
    const stored = this.store(object, route.status ? 'status' : 'object');
    if (stored.metadata.resourceVersion !== before?.metadata.resourceVersion) {
      const op = `${res.req.method ?? ''} ${route.resource.plural}${route.status ? '/status' : ''}`;
      this.counts.writes[op] = (this.counts.writes[op] ?? 0) + 1;
    }
    this.sendJson(res, code, stored);
  }

  private sendConflict(res: http.ServerResponse, what: string): void {
    this.sendJson(res, 409, statusObject(409, `Operation cannot be fulfilled on ${what}: the object has been modified; please apply your changes to the latest version and try again`));
  }

  /** DELETE of an object of a writable kind: answers with the object as it was. */
  private remove(res: http.ServerResponse, route: Route): void {
    const { resource, namespace, name } = route;
    if (name === null || route.status) return this.sendJson(res, 405, statusObject(405, `DELETE goes to an object of ${resource.plural}`));
    const existing = this.objects.get(this.key(resource, namespace, name));
    if (existing === undefined) return this.sendJson(res, 404, statusObject(404, `${describeObject(resource, name)} not found`));
    this.delete(resource.kind, namespace, name);
    const op = `DELETE ${resource.plural}`;
    this.counts.writes[op] = (this.counts.writes[op] ?? 0) + 1;
    this.sendJson(res, 200, existing);
  }

  /**
   * PATCH of an object of a writable kind (or its status) with a JSON patch or a JSON merge patch,
   * applied to the stored object in one step; a resourceVersion the result carries must be the stored
   * one (else 409), as the API server takes it for a precondition.
   */
  private patchObject(res: http.ServerResponse, route: Route, contentType: string, text: string): void {
    const { resource, namespace, name } = route;
    const what = describeObject(resource, name ?? '');
    const stored = name === null ? undefined : this.objects.get(this.key(resource, namespace, name));
    if (stored === undefined) return this.sendJson(res, 404, statusObject(404, `${what} not found`));
    let patched: StoredObject;
    try {
      const patch = JSON.parse(text) as unknown;
      if (contentType === 'application/json-patch+json') patched = applyJsonPatch(stored, patch);
      else if (contentType === 'application/merge-patch+json') patched = applyMergePatch(stored, patch);
      else return this.sendJson(res, 415, { ...statusObject(400, `fake apiserver: a PATCH of ${resource.plural} must be application/json-patch+json or application/merge-patch+json, not "${contentType}"`), code: 415, reason: 'UnsupportedMediaType' });
    } catch (error) {
      const status = error instanceof JsonPatchError ? error.status : 400;
      return this.sendJson(res, status, statusObject(status, error instanceof Error ? error.message : String(error)));
    }
    const meta = (patched.metadata ?? {}) as ObjectMeta;
    if (meta.name !== stored.metadata.name) return this.sendJson(res, 400, statusObject(400, 'the name of the object cannot be changed'));
    if (meta.resourceVersion !== stored.metadata.resourceVersion) return this.sendConflict(res, what);
    const { resourceVersion: _rv, uid: _uid, creationTimestamp: _created, generation: _generation, ...kept } = meta;
    this.finishWrite(res, route, 200, stored, { ...patched, kind: resource.kind, metadata: kept });
  }

  /**
   * PATCH of a Node with a JSON patch (application/json-patch+json), as the API server does it: the
   * patch is applied to the stored object in one step (a `test` that fails, 422, writes nothing), a
   * resourceVersion the patch sets must be the stored one (else 409), status is kept (the main
   * resource never writes it), and the admission policy judges requests of bound tokens.
   */
  private async patch(req: http.IncomingMessage, res: http.ServerResponse, pathname: string, token: string | null): Promise<void> {
    const route = this.route(pathname);
    if (route === null && !this.servesPath(pathname)) return this.sendJson(res, 404, statusObject(404, `the server could not find the requested resource (${pathname})`));
    if (route === null || route.watch || (route.resource.kind !== 'Node' && route.resource.writable !== true) || route.name === null) {
      return this.sendJson(res, 405, statusObject(405, `fake apiserver: PATCH is supported on a node and on objects of the writable kinds only (${pathname})`));
    }
    const key = [route.resource.plural, ...(route.namespace === null ? [] : [route.namespace]), route.name, ...(route.status ? ['status'] : [])].join('/');
    this.counts.patches[key] = (this.counts.patches[key] ?? 0) + 1;
    const text = await readText(req);
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
    if (route.resource.kind !== 'Node') return this.patchObject(res, route, contentType, text);
    if (contentType !== 'application/json-patch+json') {
      return this.sendJson(res, 415, { ...statusObject(400, `fake apiserver: only application/json-patch+json patches are supported, not "${contentType}"`), code: 415, reason: 'UnsupportedMediaType' });
    }
    const stored = this.objects.get(this.key(route.resource, null, route.name));
    if (stored === undefined) return this.sendJson(res, 404, statusObject(404, `nodes "${route.name}" not found`));
    let patched: StoredObject;
    try {
      patched = applyJsonPatch(stored, JSON.parse(text) as unknown);
    } catch (error) {
      const status = error instanceof JsonPatchError ? error.status : 400;
      return this.sendJson(res, status, statusObject(status, error instanceof Error ? error.message : String(error)));
    }
    const meta = patched.metadata as ObjectMeta | undefined;
    if (meta?.name !== stored.metadata.name) return this.sendJson(res, 400, statusObject(400, 'the name of the object cannot be changed'));
    if (meta.resourceVersion !== stored.metadata.resourceVersion) return this.sendConflict(res, `nodes "${route.name}"`);
    patched.status = stored.status;
    const identity = token === null ? undefined : this.identities.get(token);
    const policy = this.options.nodeTaintPolicy === undefined ? PALISADE_NODE_TAINT_POLICY : this.options.nodeTaintPolicy;
    const denied = identity === undefined || policy === null ? null : admitNodeUpdate(policy, identity, stored, patched);
    if (denied !== null) {
      this.counts.forbidden += 1;
      return this.sendJson(res, 403, statusObject(403, `nodes "${route.name}" is forbidden: ValidatingAdmissionPolicy '${policy!.name}' with binding '${policy!.name}' denied request: ${denied}`));
    }
    this.sendJson(res, 200, this.apply(patched));
  }

  /**
   * A list, in pages when `limit` is given: like the real API server, the pages after the first come
   * from the snapshot the first one was cut from (named by the continue token), and an unknown token
   * gets 410 Gone.
   */
  private sendList(res: http.ServerResponse, resource: Resource, namespace: string | null, q: URLSearchParams, fields: FieldRequirement[] | null): void {
    const cached = (q.get('resourceVersion') ?? '') === '0' && (q.get('continue') ?? '') === '';
    const limit = cached && this.options.pageCachedLists === false ? 0 : Number(q.get('limit') ?? '0');
    const token = q.get('continue') ?? '';
    let page: { items: StoredObject[]; rv: number; offset: number };
    if (token === '') {
      this.counts.lists[resource.plural] = (this.counts.lists[resource.plural] ?? 0) + 1;
      page = { items: this.stored(resource, namespace).filter((o) => fieldsMatch(fields, o)), rv: this.rv, offset: 0 };
    } else {
      const found = this.pages.get(token);
      if (found === undefined) return this.sendJson(res, 410, { ...statusObject(410, 'The provided continue parameter is too old to display a consistent list result.'), reason: 'Expired' });
      this.pages.delete(token);
      page = found;
    }
    const end = limit > 0 ? Math.min(page.items.length, page.offset + limit) : page.items.length;
    const metadata: Record<string, unknown> = { resourceVersion: String(page.rv) };
    if (end < page.items.length) {
      const next = randomUUID();
      this.pages.set(next, { ...page, offset: end });
      metadata['continue'] = next;
      metadata['remainingItemCount'] = page.items.length - end;
    }
    // Like the real API server, list items carry no kind/apiVersion (only the list does).
    const items = page.items.slice(page.offset, end).map((o) => this.listItem(o)).join(',');
    const text = `{"kind":${JSON.stringify(`${resource.kind}List`)},"apiVersion":${JSON.stringify(resource.apiVersion)},"metadata":${JSON.stringify(metadata)},"items":[${items}]}`;
    this.counts.bytesSent += Buffer.byteLength(text);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(text);
  }

  private route(pathname: string): Route | null {
    for (const resource of this.served()) {
      if (!pathname.startsWith(`${resource.prefix}/`)) continue;
      const rest = pathname.slice(resource.prefix.length + 1).split('/').filter((s) => s !== '').map(decodeURIComponent);
      const watch = rest[0] === 'watch';
      if (watch) rest.shift();
      const [a, b, c, d, e, ...extra] = rest;
      if (extra.length > 0) continue;
      // The status subresource of one object, never watched.
      const status = (after: string | undefined): boolean | null => (after === undefined ? false : after === 'status' && resource.statusSubresource === true && !watch ? true : null);
      if (a === resource.plural && d === undefined) {
        if (b !== undefined && resource.namespaced) continue;
        const sub = status(c);
        if (sub === null) continue;
        return { resource, namespace: null, name: b ?? null, watch, status: sub };
      }
      if (resource.namespaced && a === 'namespaces' && b !== undefined && c === resource.plural) {
        const sub = status(e);
        if (sub === null || (sub && d === undefined)) continue;
        return { resource, namespace: b, name: d ?? null, watch, status: sub };
      }
    }
    return null;
  }

  private watch(res: http.ServerResponse, route: Route, q: URLSearchParams, token: string | null, fields: FieldRequirement[] | null): void {
    const { resource, namespace } = route;
    this.counts.watches[resource.plural] = (this.counts.watches[resource.plural] ?? 0) + 1;
    const sendInitial = q.get('sendInitialEvents') === 'true';
    if (sendInitial && this.options.watchList === false) {
      return this.sendJson(res, 422, statusObject(422, 'sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled'));
    }
    const w: Watcher = { res, resource, namespace, bookmarks: q.get('allowWatchBookmarks') === 'true', fields, token };
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache, private' });
    res.flushHeaders();
    const rvParam = q.get('resourceVersion') ?? '';
    if (rvParam === '' || rvParam === '0' || sendInitial) {
      this.counts.streamingLists[resource.plural] = (this.counts.streamingLists[resource.plural] ?? 0) + 1;
      for (const obj of this.stored(resource, namespace)) if (fieldsMatch(fields, obj)) this.send(w, 'ADDED', obj);
      if (sendInitial && w.bookmarks) this.sendBookmark(w, { 'k8s.io/initial-events-end': 'true' });
    } else {
      const from = Number(rvParam);
      if (from < this.minWatchRv) {
        this.send(w, 'ERROR', statusObject(410, `too old resource version: ${from} (${this.minWatchRv})`));
        return void res.end();
      }
      for (const e of this.history) if (e.rv > from && this.matches(w, e.resource, e.object)) this.send(w, e.type, e.object);
    }
    this.watchers.add(w);
    res.on('close', () => this.endWatch(w));
    const timeoutSeconds = Number(q.get('timeoutSeconds') ?? '0');
    const endAfterMs = this.options.endWatchesAfterMs ?? (timeoutSeconds > 0 ? timeoutSeconds * 1000 : null);
    if (endAfterMs !== null) w.timer = setTimeout(() => this.endWatch(w), endAfterMs);
  }

  /** POST /fake/{apply,delete,compact,bookmark,close-watches,outage,failure,tokens,bind-token,crd}; GET /fake/{stats,kubeconfig,objects?kind=K&namespace=N}. */
  private async admin(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    const op = `${req.method ?? 'GET'} ${url.pathname.slice('/fake/'.length)}`;
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8').trim();
    try {
      const body: unknown = text === '' ? null : JSON.parse(text);
      const b = (body ?? {}) as Record<string, unknown>;
      switch (op) {
        case 'POST apply': {
          const list = Array.isArray(body) ? body : Array.isArray(b.items) ? b.items : [body];
          const stored = (list as KubeObject[]).map((o) => this.apply(o));
          return this.sendJson(res, 200, Array.isArray(body) || Array.isArray(b.items) ? stored : stored[0], {}, true);
        }
        case 'POST delete':
          return this.sendJson(res, 200, { deleted: this.delete(String(b.kind), typeof b.namespace === 'string' ? b.namespace : null, String(b.name)) }, {}, true);
        case 'POST compact': this.compact(); break;
        case 'POST bookmark': this.bookmark(); break;
        case 'POST close-watches': this.closeWatches(); break;
        case 'POST outage': await this.outage(typeof b.ms === 'number' ? b.ms : 1000); break;
        case 'POST failure':
          this.setFailure(body === null ? null : { status: Number(b.status), ...(typeof b.path === 'string' ? { path: new RegExp(b.path) } : {}), ...(typeof b.times === 'number' ? { times: b.times } : {}) });
          break;
        case 'POST tokens': {
          const tokens = b.tokens;
          if (tokens !== null && !(Array.isArray(tokens) && tokens.every((t) => typeof t === 'string' && t !== ''))) throw new Error('tokens must be null or a list of non-empty strings');
          const closedWatches = this.setTokens(tokens as readonly string[] | null, { closeRefusedWatches: b.closeRefusedWatches === true });
          return this.sendJson(res, 200, { ok: true, closedWatches }, {}, true);
        }
        case 'POST bind-token': {
          if (typeof b.token !== 'string' || b.token === '' || typeof b.username !== 'string') throw new Error('bind-token wants token, username and nodeName (a string or null)');
          this.bindToken(b.token, { username: b.username, nodeName: typeof b.nodeName === 'string' ? b.nodeName : null });
          break;
        }
        case 'POST crd':
          if (typeof b.kind !== 'string' || typeof b.installed !== 'boolean') throw new Error('crd wants kind (a string) and installed (true or false)');
          this.setCrdInstalled(b.kind, b.installed);
          break;
        case 'GET stats': return this.sendJson(res, 200, this.stats(), {}, true);
        case 'GET objects': {
          const ns = url.searchParams.get('namespace');
          return this.sendJson(res, 200, this.list(url.searchParams.get('kind') ?? '', ns === null || ns === '' ? null : ns), {}, true);
        }
        case 'GET kubeconfig':
          res.writeHead(200, { 'content-type': 'application/yaml' });
          return void res.end(this.kubeconfig());
        default: return this.sendJson(res, 404, statusObject(404, `fake apiserver: no admin operation "${op}"`), {}, true);
      }
      this.sendJson(res, 200, { ok: true, resourceVersion: this.resourceVersion }, {}, true);
    } catch (err) {
      this.sendJson(res, 400, statusObject(400, `fake apiserver: ${op}: ${err instanceof Error ? err.message : String(err)}`), {}, true);
    }
  }
}

async function readText(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
