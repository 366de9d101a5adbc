import type { ApiClient } from './api-client.js';
import { ApiRequestError } from './api-client.js';

/**
 * One coordination.k8s.io/v1 Lease, read and written whole with its resourceVersion as the
 * precondition: the API server refuses an update made from a stale read with 409 Conflict, which is
 * what makes leader election safe (leader-election.ts). Only the fields election uses are typed.
 */

export interface LeaseRecord {
  /** '' when released. */
  readonly holderIdentity: string;
  readonly leaseDurationSeconds: number;
  /** RFC 3339 with microseconds (metav1.MicroTime), as the API server keeps them. */
  readonly acquireTime: string | null;
  readonly renewTime: string | null;
  readonly leaseTransitions: number;
}

export interface StoredLease {
  readonly resourceVersion: string;
  readonly record: LeaseRecord;
}

/** The seam leader election writes through; the tests' fake enforces the same preconditions. */
export interface LeaseStore {
  /** What the Lease says now; null when it does not exist. */
  get(): Promise<StoredLease | null>;
  /** Creates the Lease; rejects with LeaseConflict when it exists already. */
  create(record: LeaseRecord): Promise<StoredLease>;
  /** Replaces it if it is still at `resourceVersion`; rejects with LeaseConflict when it is not. */
  update(resourceVersion: string, record: LeaseRecord): Promise<StoredLease>;
  /** "namespace/name", for logs and the status. */
  readonly description: string;
}

/** Someone else wrote the Lease first (409 Conflict or AlreadyExists). */
export class LeaseConflict extends Error {
  readonly code = 'LEASE_CONFLICT';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LeaseConflict';
  }
}

/** A Kubernetes MicroTime: RFC 3339 in UTC with six fractional digits. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

interface LeaseObject {
  metadata?: { resourceVersion?: unknown };
  spec?: Record<string, unknown>;
}

function recordOf(object: LeaseObject): StoredLease {
  const spec = object.spec ?? {};
  const text = (v: unknown) => (typeof v === 'string' ? v : null);
  return {
    resourceVersion: String(object.metadata?.resourceVersion ?? ''),
    record: {
      holderIdentity: text(spec['holderIdentity']) ?? '',
      leaseDurationSeconds: typeof spec['leaseDurationSeconds'] === 'number' ? spec['leaseDurationSeconds'] : 0,
      acquireTime: text(spec['acquireTime']),
      renewTime: text(spec['renewTime']),
      leaseTransitions: typeof spec['leaseTransitions'] === 'number' ? spec['leaseTransitions'] : 0,
    },
  };
}

/** How long one Lease request may take: well inside the renew deadline, so a hung request cannot outlive leadership. */
const REQUEST_TIMEOUT_MS = 4000;

export class KubeLeaseStore implements LeaseStore {
  readonly description: string;
  private readonly client: ApiClient;
  private readonly namespace: string;
  private readonly name: string;

  constructor(client: ApiClient, namespace: string, name: string) {
    this.client = client;
    this.namespace = namespace;
    this.name = name;
    this.description = `${namespace}/${name}`;
  }

  private get collection(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.namespace)}/leases`;
  }

  private body(record: LeaseRecord, resourceVersion?: string): unknown {
    const spec: Record<string, unknown> = { holderIdentity: record.holderIdentity, leaseDurationSeconds: record.leaseDurationSeconds, leaseTransitions: record.leaseTransitions };
    if (record.acquireTime !== null) spec['acquireTime'] = record.acquireTime;
    if (record.renewTime !== null) spec['renewTime'] = record.renewTime;
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: this.name, namespace: this.namespace, ...(resourceVersion === undefined ? {} : { resourceVersion }) },
      spec,
    };
  }

  async get(): Promise<StoredLease | null> {
    try {
      return recordOf(await this.client.send('GET', `${this.collection}/${encodeURIComponent(this.name)}`, undefined, AbortSignal.timeout(REQUEST_TIMEOUT_MS)) as LeaseObject);
    } catch (error) {
      if (error instanceof ApiRequestError && error.status === 404) return null;
      throw error;
    }
  }

  async create(record: LeaseRecord): Promise<StoredLease> {
    return this.written(() => this.client.send('POST', this.collection, this.body(record), AbortSignal.timeout(REQUEST_TIMEOUT_MS)));
  }

  async update(resourceVersion: string, record: LeaseRecord): Promise<StoredLease> {
    return this.written(() => this.client.send('PUT', `${this.collection}/${encodeURIComponent(this.name)}`, this.body(record, resourceVersion), AbortSignal.timeout(REQUEST_TIMEOUT_MS)));
  }

  private async written(write: () => Promise<unknown>): Promise<StoredLease> {
    try {
      return recordOf(await write() as LeaseObject);
    } catch (error) {
      if (error instanceof ApiRequestError && error.status === 409) throw new LeaseConflict(`Lease ${this.description}: ${error.reason ?? 'Conflict'}`, { cause: error });
      throw error;
    }
  }
}
