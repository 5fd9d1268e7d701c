// The live WebSocket: reconnects with capped exponential backoff and jitter, pings to notice a
// dead link, and resumes without a page reload.

import type { WsEnvelope } from "./contracts";

/** A message from the gateway: its kind, when it was sent (ISO 8601) and its fields. */
export type { WsEnvelope };

export type ConnectionState =
  | { kind: "connecting"; attempt: number }
  | { kind: "open" }
  | { kind: "waiting"; attempt: number; delayMs: number; reason: string }
  | { kind: "closed" };

/** Delay before reconnect attempt ``attempt`` (1-based): 0.5 s doubling to 15 s, +/-20 % jitter. */
export function backoffDelay(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(15_000, 500 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.8 + 0.4 * random()));
}

export interface SocketHandlers {
  /** Every message in the envelope ``{type, timestamp, data}`` (as VerTac v0.2.0 sent them). */
  onMessage(message: WsEnvelope): void;
  onState(state: ConnectionState): void;
}

export class LiveSocket {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private timer: number | undefined;
  private pinger: number | undefined;
  private lastSeen = 0;
  private stopped = false;

  constructor(
    private readonly url: string,
    private readonly handlers: SocketHandlers,
    private readonly pingEveryMs = 5_000,
  ) {}

  open(): void {
    this.stopped = false;
    this.connect();
  }

  close(): void {
    this.stopped = true;
    window.clearTimeout(this.timer);
    window.clearInterval(this.pinger);
    this.ws?.close(1000, "page left");
    this.ws = null;
    this.handlers.onState({ kind: "closed" });
  }

  send(message: object): boolean {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  private connect(): void {
    this.attempt++;
    this.handlers.onState({ kind: "connecting", attempt: this.attempt });
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.lastSeen = Date.now();
      this.handlers.onState({ kind: "open" });
      window.clearInterval(this.pinger);
      this.pinger = window.setInterval(() => this.heartbeat(), this.pingEveryMs);
    };
    ws.onmessage = (event: MessageEvent<string>) => {
      this.lastSeen = Date.now();
      try {
        this.handlers.onMessage(JSON.parse(event.data) as WsEnvelope);
      } catch (err) {
        console.error("unreadable live message", err);
      }
    };
    ws.onclose = (event) => {
      const reason = event.reason || (event.code === 1006 ? "connection lost" : `closed (${event.code})`);
      this.dropped(ws, reason);
    };
  }

  /** Forget ``ws`` (once) and schedule the next attempt. */
  private dropped(ws: WebSocket, reason: string): void {
    if (this.ws !== ws) return;
    window.clearInterval(this.pinger);
    this.ws = null;
    if (this.stopped) return;
    const delayMs = backoffDelay(this.attempt + 1);
    this.handlers.onState({ kind: "waiting", attempt: this.attempt + 1, delayMs, reason });
    this.timer = window.setTimeout(() => this.connect(), delayMs);
  }

  private heartbeat(): void {
    const ws = this.ws;
    if (ws && Date.now() - this.lastSeen > 3 * this.pingEveryMs) {
      this.dropped(ws, "no answer to ping");
      ws.close(4000, "no answer to ping");
      return;
    }
    this.send({ type: "ping" });
  }
}
