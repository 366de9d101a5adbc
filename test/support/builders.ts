import assert from 'node:assert/strict';
import { parseObjects } from '../../rules/snapshot.js';
import type { Snapshot } from '../../rules/snapshot.js';
import { formatProblem } from '../../rules/problems.js';

/**
 * Builders of raw Kubernetes objects, as the API server or a manifest would give them, so tests go
 * through the same parsing as production. Tweaks are named options; defaults are the boring case.
 */

type Obj = Record<string, unknown>;

export interface PodOptions {
  readonly labels?: Record<string, string>;
  readonly ip?: string | null;
  readonly node?: string;
  readonly ports?: readonly { name: string; port: number; protocol?: 'TCP' | 'UDP' | 'SCTP' }[];
  readonly phase?: string;
  readonly hostNetwork?: boolean;
  /** Address only in the VPC CNI annotation (status not published yet). */
  readonly annotationIp?: string;
  readonly annotations?: Record<string, string>;
}

export function pod(namespace: string, name: string, options: PodOptions = {}): Obj {
  const ip = options.ip === undefined ? null : options.ip;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace,
      labels: options.labels ?? {},
      ...(options.annotationIp === undefined && options.annotations === undefined ? {} : {
        annotations: { ...options.annotations, ...(options.annotationIp === undefined ? {} : { 'vpc.amazonaws.com/pod-ips': options.annotationIp }) },
      }),
    },
    spec: {
      nodeName: options.node ?? 'node-a',
      hostNetwork: options.hostNetwork ?? false,
      containers: [{
        name: 'main',
        image: 'busybox',
        ports: (options.ports ?? []).map((p) => ({ name: p.name, containerPort: p.port, protocol: p.protocol ?? 'TCP' })),
      }],
    },
    status: {
      phase: options.phase ?? (ip === null && options.annotationIp === undefined ? 'Pending' : 'Running'),
      ...(ip === null ? {} : { podIP: ip, podIPs: [{ ip }] }),
    },
  };
}

export function namespace(name: string, labels: Record<string, string> = {}): Obj {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

export interface NodeOptions {
  /** EC2 nodes in public subnets have one. */
  readonly externalIp?: string;
  readonly labels?: Record<string, string>;
}

/** A Node with its InternalIP, and an ExternalIP when given (as the third argument, or in options). */
export function node(name: string, address: string, options: string | NodeOptions = {}): Obj {
  const { externalIp, labels } = typeof options === 'string' ? { externalIp: options, labels: undefined } : options;
  const addresses = [{ type: 'InternalIP', address }, ...(externalIp === undefined ? [] : [{ type: 'ExternalIP', address: externalIp }]), { type: 'Hostname', address: name }];
  return { apiVersion: 'v1', kind: 'Node', metadata: { name, ...(labels === undefined ? {} : { labels }) }, status: { addresses } };
}

export function policy(namespace: string, name: string, spec: Obj): Obj {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace }, spec };
}

export function clusterPolicy(name: string, spec: Obj): Obj {
  return { apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name }, spec };
}

/** Parses objects and fails the test on any error-severity problem. */
export function snapshotOf(objects: readonly Obj[]): Snapshot {
  const { snapshot, problems } = parseObjects(objects.map((object) => ({ object })));
  const errors = problems.filter((p) => p.severity === 'error');
  assert.deepEqual(errors.map(formatProblem), [], 'test objects must be valid');
  return snapshot;
}
