// Counters the browser benchmark and tests read from ``window.__vertac``: chart paints (redraws
// with new data), animation frames, the time spent redrawing the charts, and the latency from a
// frame's publication to the paint that shows it.

export interface PerfCounters {
  paints: number;
  frames: number;
  messages: number;
  latenciesMs: number[];
  arrivalsMs: number[];
  drawMs: number[];
  backfilled: number;
  reset(): void;
}

const MAX_LATENCIES = 200_000;

export const perf: PerfCounters = {
  paints: 0,
  frames: 0,
  messages: 0,
  latenciesMs: [],
  arrivalsMs: [],
  drawMs: [],
  backfilled: 0,
  reset() {
    this.paints = 0;
    this.frames = 0;
    this.messages = 0;
    this.latenciesMs = [];
    this.arrivalsMs = [];
    this.drawMs = [];
  },
};

declare global {
  interface Window {
    __vertac: PerfCounters;
  }
}
window.__vertac = perf;

/**
 * Wall-clock now in ms, the clock the publisher stamps frames with. (Not
 * ``performance.timeOrigin + performance.now()``: that is monotonic time with an offset fixed at
 * page load, and can sit tens of ms away from the system clock.)
 */
export function wallNow(): number {
  return Date.now();
}

/** Record when frames published at ``sentMs`` reached the page (before any drawing). */
export function stampArrival(sentMs: number[]): void {
  const now = wallNow();
  const out = perf.arrivalsMs;
  for (const sent of sentMs) if (out.length < MAX_LATENCIES) out.push(now - sent);
}

/** Record, after the coming paint, the latency of frames published at ``sentMs``. */
export function stampAfterPaint(sentMs: number[]): void {
  if (sentMs.length === 0) return;
  // a task queued from requestAnimationFrame runs once that frame has been rendered
  setTimeout(() => {
    const now = wallNow();
    const out = perf.latenciesMs;
    for (const sent of sentMs) if (out.length < MAX_LATENCIES) out.push(now - sent);
  }, 0);
}
