import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ListenAddress } from './config.js';

/** A thin HTTP layer: routes map a request to a status code and a body; handlers never throw out. */

export interface Reply {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
}

export type Route = (url: URL) => Promise<Reply> | Reply;

export const json = (status: number, value: unknown): Reply => ({ status, contentType: 'application/json', body: `${JSON.stringify(value, null, 2)}\n` });
export const text = (status: number, body: string, contentType = 'text/plain; charset=utf-8'): Reply => ({ status, contentType, body });

export class HttpServer {
  private readonly server: Server;
  private readonly routes: ReadonlyMap<string, Route>;

  constructor(routes: ReadonlyMap<string, Route>) {
    this.routes = routes;
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  async listen(address: ListenAddress): Promise<ListenAddress> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(address.port, address.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const bound = this.server.address() as AddressInfo;
    return { host: address.host, port: bound.port };
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let reply: Reply;
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const route = this.routes.get(url.pathname);
      if (req.method !== 'GET' && req.method !== 'HEAD') reply = text(405, 'only GET is served here\n');
      else if (route === undefined) reply = text(404, `no such path: ${url.pathname}; try ${[...this.routes.keys()].join(', ')}\n`);
      else reply = await route(url);
    } catch (error) {
      reply = text(500, `internal error: ${error instanceof Error ? error.message : String(error)}\n`);
    }
    res.writeHead(reply.status, { 'content-type': reply.contentType, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : reply.body);
  }
}
