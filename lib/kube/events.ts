import type { ApiClient } from './api-client.js';
import { ApiRequestError } from './api-client.js';

/** Where the policy reporter sends Events; the tests' fake keeps them, and refuses a name twice as the API server does. */
export interface EventSink {
  /** 'exists' when an Event of that name is there already (409 AlreadyExists): reported before. */
  create(namespace: string, event: Record<string, unknown>): Promise<'created' | 'exists'>;
}

/** How long one Event write may take. */
const REQUEST_TIMEOUT_MS = 10_000;

/** core/v1 Events, created with POST; nothing is read back, so RBAC needs only `create`. */
export class KubeEventSink implements EventSink {
  private readonly client: ApiClient;

  constructor(client: ApiClient) {
    this.client = client;
  }

  async create(namespace: string, event: Record<string, unknown>): Promise<'created' | 'exists'> {
    try {
      await this.client.send('POST', `/api/v1/namespaces/${encodeURIComponent(namespace)}/events`, event, AbortSignal.timeout(REQUEST_TIMEOUT_MS));
      return 'created';
    } catch (error) {
      if (error instanceof ApiRequestError && error.status === 409) return 'exists';
      throw error;
    }
  }
}
