import type { ApiClient } from './api-client.js';
import { ApiRequestError } from './api-client.js';

/**
 * Whether the API server serves a resource, asked of its discovery document for the one group version
 * (GET /apis/{group}/{version}, an APIResourceList): one small request, allowed to every authenticated
 * client by the default system:discovery role. A 404 is a clear no (no CRD defines the group version);
 * so is a list without the resource. Anything else (unreachable, 5xx, 403) is an error: not knowing,
 * which the caller must not take for either answer.
 */

/** How long one discovery request may take. */
const REQUEST_TIMEOUT_MS = 10_000;

export async function servesResource(client: ApiClient, groupVersion: string, plural: string): Promise<boolean> {
  let document: unknown;
  try {
    document = await client.getJson(`/apis/${groupVersion}`, AbortSignal.timeout(REQUEST_TIMEOUT_MS));
  } catch (error) {
    if (error instanceof ApiRequestError && error.status === 404) return false;
    throw error;
  }
  const resources = typeof document === 'object' && document !== null ? (document as { resources?: unknown }).resources : undefined;
  if (!Array.isArray(resources)) throw new Error(`GET /apis/${groupVersion}: not an APIResourceList (no resources list)`);
  return resources.some((r) => typeof r === 'object' && r !== null && (r as { name?: unknown }).name === plural);
}
