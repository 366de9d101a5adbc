import type { ApiClient } from './api-client.js';

/** Where the ClusterNetworkPolicy status writer sends its patches; the tests' fake keeps them. */
export interface ClusterPolicyStatusSink {
  /** An RFC 6902 JSON patch of the status subresource; rejects with ApiRequestError (409, 422, 404...). */
  patchStatus(name: string, patch: readonly unknown[]): Promise<void>;
}

/** How long one status write may take. */
const REQUEST_TIMEOUT_MS = 10_000;

export const CLUSTER_POLICIES_PATH = '/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies';

/**
 * PATCH .../clusternetworkpolicies/{name}/status: only the status subresource is written, so RBAC needs
 * only `patch` on clusternetworkpolicies/status, and the spec cannot be changed through it.
 */
export class KubeClusterPolicyStatusSink implements ClusterPolicyStatusSink {
  private readonly client: ApiClient;

  constructor(client: ApiClient) {
    this.client = client;
  }

  async patchStatus(name: string, patch: readonly unknown[]): Promise<void> {
    await this.client.patchJson(`${CLUSTER_POLICIES_PATH}/${encodeURIComponent(name)}/status`, patch, AbortSignal.timeout(REQUEST_TIMEOUT_MS));
  }
}
