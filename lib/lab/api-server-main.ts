/**
 * Runs the lab API server as its own process, so it can live in another network namespace than the
 * program driving it (which then uses the /fake/ admin API over the unix socket):
 *
 *   node dist/lib/lab/api-server-main.js [--port 6443] [--host 127.0.0.1] [--socket PATH]
 *     [--kubeconfig-out FILE] [--bookmark-ms 1000] [--history-limit 1000] [--seed FILE.yaml]
 *     [--token TOKEN]... [--kubeconfig-token-file FILE] [--crd KIND]...
 *
 * --token (repeatable) sets the bearer tokens accepted (default: fake-token); --kubeconfig-token-file
 * makes the written kubeconfig's user read its token from FILE (kubeconfig `tokenFile`), which the
 * caller keeps and rotates, rather than carry a token. --crd (repeatable) installs the CRD of a kind
 * defined by one (ClusterNetworkPolicy) from the start; /fake/crd installs and removes it later.
 *
 * Prints one line "ready <url>" on stdout once listening (after writing --kubeconfig-out and
 * applying every object of the --seed YAML documents, List items included), then serves until
 * SIGTERM or SIGINT and closes cleanly. Drive it through the HTTP admin API under /fake/.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { FakeApiServer } from './api-server.js';
import type { KubeObject } from './api-server.js';

function intOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new Error(`--${name} wants a non-negative integer, got "${value}"`);
  return Number(value);
}

async function seedObjects(file: string): Promise<KubeObject[]> {
  const objects: KubeObject[] = [];
  for (const doc of parseAllDocuments(await readFile(file, 'utf8'))) {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]?.message ?? 'YAML error'}`);
    const value = doc.toJSON() as KubeObject | null;
    if (value === null || typeof value !== 'object') continue;
    if (Array.isArray(value.items)) objects.push(...(value.items as KubeObject[]));
    else objects.push(value);
  }
  return objects;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      socket: { type: 'string' },
      'kubeconfig-out': { type: 'string' },
      'bookmark-ms': { type: 'string' },
      'history-limit': { type: 'string' },
      seed: { type: 'string' },
      token: { type: 'string', multiple: true },
      'kubeconfig-token-file': { type: 'string' },
      crd: { type: 'string', multiple: true },
    },
    strict: true,
  });
  const server = await FakeApiServer.start({
    port: intOption(values.port, 'port') ?? 0,
    ...(values.host === undefined ? {} : { host: values.host }),
    ...(values.socket === undefined ? {} : { socketPath: values.socket }),
    ...(values['bookmark-ms'] === undefined ? {} : { bookmarkIntervalMs: intOption(values['bookmark-ms'], 'bookmark-ms') }),
    ...(values['history-limit'] === undefined ? {} : { historyLimit: intOption(values['history-limit'], 'history-limit') }),
    ...(values.token === undefined ? {} : { tokens: values.token }),
    ...(values.crd === undefined ? {} : { crds: values.crd }),
  });
  let closing = false;
  const shutdown = (): void => {
    if (closing) return;
    closing = true;
    server.close().then(() => process.exit(0), (err: unknown) => {
      process.stderr.write(`fake-apiserver: close failed: ${String(err)}\n`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  if (values.seed !== undefined) for (const obj of await seedObjects(values.seed)) server.apply(obj);
  if (values['kubeconfig-out'] !== undefined) await writeFile(values['kubeconfig-out'], server.kubeconfig(server.url, values['kubeconfig-token-file'] === undefined ? {} : { tokenFile: values['kubeconfig-token-file'] }));
  process.stdout.write(`ready ${server.url}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`fake-apiserver: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(2);
});
