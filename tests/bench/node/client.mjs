// WebSocket viewers for the viewer benchmark, built to cost far less than the server they measure.
//
// Each viewer is a plain TCP socket that performs the RFC 6455 opening handshake (checking the
// server's Sec-WebSocket-Accept) and then walks the frame headers of what arrives: every text
// frame whose payload starts with {"type":"samples" is counted, and only for every
// `sampleEvery`-th viewer is the payload kept, to read its sent_ms (each frame's publication
// time) and take the latency to its arrival. No payload is copied or decoded otherwise.
//
// Usage: node client.mjs '<json>' with {urls, viewers, connectConcurrency, measureS, sampleEvery};
// `urls` are spread round-robin over the viewers. Prints {"connected": n} once the connections
// are open, waits for a line on stdin to start the window, then prints one JSON line of results.
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";

const opts = JSON.parse(process.argv[2]);
const PREFIX = Buffer.from('{"type":"samples"');
const MARK = '"sent_ms":[';
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const counts = new Array(opts.viewers).fill(0);
const latencies = [];
const sockets = [];
let measuring = false;
let failed = 0;
let closedEarly = 0;
let badFrames = 0;
const errors = new Map();

function note(err) {
  const key = String(err && err.message ? err.message : err).slice(0, 120);
  errors.set(key, (errors.get(key) || 0) + 1);
}

function sentMs(payload, now) {
  const text = payload.toString();
  const at = text.lastIndexOf(MARK);
  if (at < 0) return;
  const end = text.indexOf("]", at);
  for (const v of text.slice(at + MARK.length, end).split(",")) {
    if (v) latencies.push(now - Number(v));
  }
}

// The pong a client owes for a ping (RFC 6455 5.5.3), masked as every client frame must be: a
// viewer that leaves pings unanswered is closed by the server after its ping timeout.
function pong(sock, payload) {
  const mask = randomBytes(4);
  const body = Buffer.from(payload);
  for (let k = 0; k < body.length; k++) body[k] ^= mask[k % 4];
  sock.write(Buffer.concat([Buffer.from([0x8a, 0x80 | body.length]), mask, body]));
}

// A frame parser that skips payloads: `carry` holds at most a header and the payload prefix.
function frames(i, sampled, sock) {
  let carry = null;
  let skip = 0; // payload bytes of the current frame still to pass over
  let keep = null; // the current payload's parts, for a sampled viewer's samples frame
  let ping = null; // the current ping's payload parts
  return (chunk) => {
    if (carry) {
      chunk = Buffer.concat([carry, chunk]);
      carry = null;
    }
    let off = 0;
    while (off < chunk.length) {
      if (skip > 0) {
        const n = Math.min(skip, chunk.length - off);
        if (keep) keep.push(chunk.subarray(off, off + n));
        if (ping) ping.push(chunk.subarray(off, off + n));
        off += n;
        skip -= n;
        if (skip === 0 && keep) {
          sentMs(Buffer.concat(keep), Date.now());
          keep = null;
        }
        if (skip === 0 && ping) {
          pong(sock, Buffer.concat(ping));
          ping = null;
        }
        continue;
      }
      const left = chunk.length - off;
      if (left < 2) {
        carry = Buffer.from(chunk.subarray(off));
        break;
      }
      const b0 = chunk[off];
      const b1 = chunk[off + 1];
      let len = b1 & 0x7f;
      let head = 2;
      if (len === 126) head = 4;
      else if (len === 127) head = 10;
      if (b1 & 0x80) badFrames += 1; // a server must not mask
      if (left < head) {
        carry = Buffer.from(chunk.subarray(off));
        break;
      }
      if (len === 126) len = chunk.readUInt16BE(off + 2);
      else if (len === 127) len = Number(chunk.readBigUInt64BE(off + 2));
      const probe = Math.min(len, PREFIX.length);
      if (left < head + probe) {
        carry = Buffer.from(chunk.subarray(off));
        break;
      }
      const isSamples =
        (b0 & 0x0f) === 1 && probe === PREFIX.length && chunk.compare(PREFIX, 0, probe, off + head, off + head + probe) === 0;
      if (isSamples && measuring) {
        counts[i] += 1;
        if (sampled) keep = [];
      }
      if ((b0 & 0x0f) === 9) ping = [];
      off += head;
      skip = len;
      if (len === 0 && keep) {
        keep = null;
      }
      if (len === 0 && ping) {
        pong(sock, Buffer.alloc(0));
        ping = null;
      }
    }
  };
}

function open(i) {
  const url = new URL(opts.urls[i % opts.urls.length]);
  const key = randomBytes(16).toString("base64");
  const accept = createHash("sha1").update(key + GUID).digest("base64");
  return new Promise((resolve) => {
    const sock = net.connect({ host: url.hostname, port: Number(url.port), noDelay: true });
    let settled = false;
    let head = Buffer.alloc(0);
    const onFrames = frames(i, i % opts.sampleEvery === 0, sock);
    const fail = (err) => {
      note(err);
      if (!settled) {
        settled = true;
        failed += 1;
        sock.destroy();
        resolve(false);
      }
    };
    sock.setTimeout(60000, () => fail(new Error("handshake timed out")));
    sock.on("connect", () => {
      sock.write(
        `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    sock.on("data", (chunk) => {
      if (settled) return onFrames(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const response = head.subarray(0, end).toString();
      if (!/^HTTP\/1\.1 101 /.test(response) || !response.includes(accept)) {
        return fail(new Error(`handshake refused: ${response.split("\r\n")[0]}`));
      }
      settled = true;
      sock.setTimeout(0);
      sockets.push(sock);
      resolve(true);
      if (head.length > end + 4) onFrames(head.subarray(end + 4));
    });
    sock.on("error", fail);
    sock.on("close", () => {
      if (settled && measuring) closedEarly += 1;
    });
  });
}

async function main() {
  const t0 = Date.now();
  let next = 0;
  async function worker() {
    while (next < opts.viewers) {
      const i = next++;
      await open(i);
    }
  }
  await Promise.all(Array.from({ length: opts.connectConcurrency }, worker));
  const connectS = (Date.now() - t0) / 1000;
  process.stdout.write(JSON.stringify({ connected: sockets.length, failed }) + "\n");
  await new Promise((r) => process.stdin.once("data", r));
  const cpu0 = process.cpuUsage();
  const w0 = Date.now();
  measuring = true;
  await new Promise((r) => setTimeout(r, opts.measureS * 1000));
  measuring = false;
  const windowS = (Date.now() - w0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  for (const s of sockets) s.destroy();
  process.stdout.write(
    JSON.stringify({
      connected: sockets.length,
      failed,
      closedEarly,
      badFrames,
      connectS,
      windowS,
      cpuS: (cpu.user + cpu.system) / 1e6,
      rates: counts.map((c) => c / windowS),
      latencies,
      errors: Object.fromEntries(errors),
    }) + "\n",
    () => process.exit(0), // a pipe is written asynchronously: exit once it is flushed
  );
}

main();
