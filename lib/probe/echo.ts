/**
 * A tiny TCP/UDP echo server and client for proving what a firewall lets through: the in-process
 * server and client that the probe program runs (see command-line.ts), and the words for what a
 * round trip came to.
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { PalisadeError } from '../errors.js';

export type ProbeProtocol = 'tcp' | 'udp';
/** What a round trip came to. `timeout` is what a DROP rule looks like from the client. */
export type ProbeOutcome = 'ok' | 'timeout' | 'refused' | 'unreachable';

export const PROBE_OUTCOMES: readonly ProbeOutcome[] = ['ok', 'timeout', 'refused', 'unreachable'];
export const DEFAULT_PROBE_TIMEOUT_MS = 1000;
/** UDP has no handshake: resend the datagram this often until the echo comes back or time runs out. */
const UDP_RESEND_MS = 100;

export class ProbeError extends PalisadeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROBE', message, options);
    this.name = 'ProbeError';
  }
}

export interface EchoServerOptions {
  readonly tcp: readonly number[];
  readonly udp: readonly number[];
  /** Default 0.0.0.0. */
  readonly host?: string;
  /**
   * UDP on a host with several addresses: besides the wildcard socket, bind one socket per local IPv4
   * address present at start, so an echo leaves from the address the datagram was sent to (a wildcard
   * socket replies from the routing's preferred source, which a connected client ignores).
   */
  readonly udpPerAddress?: boolean;
}

export interface EchoServers {
  close(): Promise<void>;
}

/** Listens on every port given, echoing; resolves once all are bound, rejects (closing the rest) if one cannot be. */
export async function startEchoServers(options: EchoServerOptions): Promise<EchoServers> {
  const host = options.host ?? '0.0.0.0';
  const closers: (() => Promise<void>)[] = [];
  const close = async (): Promise<void> => {
    await Promise.allSettled(closers.map((c) => c()));
  };
  try {
    for (const port of options.tcp) closers.push(await listenTcpEcho(host, port));
    const perAddress = options.udpPerAddress === true && host === '0.0.0.0';
    const addresses = perAddress ? localIPv4Addresses() : [];
    for (const port of options.udp) {
      closers.push(await bindUdpEcho(host, port, perAddress));
      for (const address of addresses) closers.push(await bindUdpEcho(address, port, true));
    }
  } catch (error) {
    await close();
    throw error;
  }
  return { close };
}

async function listenTcpEcho(host: string, port: number): Promise<() => Promise<void>> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    socket.pipe(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
}

/** Every IPv4 address of this network namespace, each once (169.254.1.1 sits on every host veth of a node). */
function localIPv4Addresses(): string[] {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4') out.add(a.address);
  return [...out];
}

/** With reuseAddr, the wildcard and per-address sockets share the port; the kernel picks the most specific. */
async function bindUdpEcho(host: string, port: number, reuseAddr = false): Promise<() => Promise<void>> {
  const socket = dgram.createSocket({ type: 'udp4', reuseAddr });
  socket.on('message', (message, peer) => socket.send(message, peer.port, peer.address));
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, host, () => {
      socket.off('error', reject);
      socket.on('error', () => {});
      resolve();
    });
  });
  return () => new Promise<void>((resolve) => socket.close(() => resolve()));
}

export interface ConnectOptions {
  readonly proto: ProbeProtocol;
  readonly to: string;
  readonly port: number;
  readonly timeoutMs?: number;
  /** Source address to bind (it must be held by the namespace), e.g. to send with a forged one. */
  readonly from?: string;
  /** UDP only: the source port to bind (default: any). The agent uses it to never reuse a port. */
  readonly localPort?: number;
}

/** One echo round trip. Rejects only when the probe itself cannot run (bad address, bind failure...). */
export function connectOnce(options: ConnectOptions): Promise<ProbeOutcome> {
  return options.proto === 'tcp' ? tcpRoundTrip(options) : udpRoundTrip(options);
}

function probeToken(): string {
  return `palisade-probe ${randomBytes(8).toString('hex')}\n`;
}

/** Socket errors that are answers from the network rather than failures of the probe. */
function outcomeOfError(error: NodeJS.ErrnoException): ProbeOutcome | null {
  switch (error.code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'unreachable';
    case 'ETIMEDOUT':
      return 'timeout';
    default:
      return null;
  }
}

function tcpRoundTrip(options: ConnectOptions): Promise<ProbeOutcome> {
  const token = probeToken();
  return new Promise((resolve, reject) => {
    let received = '';
    const socket = net.connect({ host: options.to, port: options.port, ...(options.from === undefined ? {} : { localAddress: options.from }) });
    const finish = (settle: () => void): void => {
      clearTimeout(timer);
      socket.destroy();
      settle();
    };
    const timer = setTimeout(() => finish(() => resolve('timeout')), options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(token));
    socket.on('data', (chunk: string) => {
      received += chunk;
      if (received.includes(token)) finish(() => resolve('ok'));
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const outcome = outcomeOfError(error);
      finish(() => (outcome === null ? reject(error) : resolve(outcome)));
    });
    // The server closing without echoing is not a round trip; wait for the timer to call it.
  });
}

function udpRoundTrip(options: ConnectOptions): Promise<ProbeOutcome> {
  const token = Buffer.from(probeToken());
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    let resend: NodeJS.Timeout | undefined;
    const finish = (settle: () => void): void => {
      clearTimeout(timer);
      clearInterval(resend);
      socket.close();
      settle();
    };
    const timer = setTimeout(() => finish(() => resolve('timeout')), options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS);
    const send = (): void => socket.send(token);
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const outcome = outcomeOfError(error);
      finish(() => (outcome === null ? reject(error) : resolve(outcome)));
    });
    socket.on('message', (message) => {
      if (message.equals(token)) finish(() => resolve('ok'));
    });
    // A connected socket hears ICMP errors (port unreachable comes back as ECONNREFUSED).
    socket.bind({ port: options.localPort ?? 0, ...(options.from === undefined ? {} : { address: options.from }) }, () => {
      socket.connect(options.port, options.to, () => {
        send();
        resend = setInterval(send, UDP_RESEND_MS);
      });
    });
  });
}
