// The gateway's REST API as the dashboard uses it. The contract types are generated from the JSON
// Schemas of schemas/ into contracts.ts (`make schemas`); only the alert list rows are typed here.

import type {
  CycleAlerts,
  CycleDetail,
  CycleOverlay,
  CycleSummary,
  DatasetEntry,
  HistorySamples,
  ReferenceInfo,
  SiteLinkStatus,
  StreamRegistered,
  StreamStatus,
  WhoAmI,
} from "./contracts";

export type {
  AlertChanged,
  AlertGroup,
  AnalysisCompleted,
  CycleAlerts,
  CycleDetail,
  CycleOverlay,
  CycleStateChanged,
  CycleSummary,
  DatasetEntry,
  HistorySamples,
  HistoryTrace,
  OverlaySensor,
  Recommendation,
  ReferenceInfo,
  SensorDeviation,
  SensorSpec,
  SensorStats,
  SiteLinkStatus,
  StreamRegistered,
  StreamStatus,
  WsEnvelope,
  WsSamples,
  WsSensorTrace,
  WhoAmI,
} from "./contracts";

/** A row of ``GET /api/live/alerts`` (a database row, not a bus contract). */
export interface AlertRow {
  alert_id: string;
  stream_id: string;
  rule: string;
  rule_kind: string;
  sensor_id: string | null;
  severity: "info" | "warning" | "critical";
  state: "raised" | "acknowledged" | "cleared";
  message: string;
  occurrences: number;
  value: number | null;
  raised_at: string;
  acknowledged_by: string | null;
  cleared_at: string | null;
}

/** An API answer that was not 2xx, with the gateway's reason. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field: string = "",
  ) {
    super(message);
  }
}

async function call<T>(path: string, init?: RequestInit): Promise<T> {
  const response = await fetch(path, {
    ...init,
    headers: { Accept: "application/json", ...(init?.body ? { "Content-Type": "application/json" } : {}) },
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let field = "";
    try {
      const body = (await response.json()) as { error?: string; details?: { field: string }[] };
      message = body.error ?? message;
      field = body.details?.[0]?.field ?? "";
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(response.status, message, field);
  }
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

const enc = encodeURIComponent;

function historyQuery(startMs: number, endMs: number, maxPoints: number, format?: string): string {
  const q = new URLSearchParams({
    start: new Date(startMs).toISOString(),
    end: new Date(endMs).toISOString(),
    max_points: String(Math.max(10, Math.min(10_000, Math.round(maxPoints)))),
  });
  if (format) q.set("format", format);
  return q.toString();
}

export const api = {
  me: () => call<WhoAmI>("/api/auth/me"),
  signIn: (token: string) =>
    call<WhoAmI>("/api/auth/session", { method: "POST", body: JSON.stringify({ token }) }),
  signOut: () => call<void>("/api/auth/session", { method: "DELETE" }),
  streams: () => call<StreamRegistered[]>("/api/live/streams"),
  sites: () => call<SiteLinkStatus[]>("/api/sites"),
  status: (sid: string) => call<StreamStatus>(`/api/live/stream/${enc(sid)}/status`),
  cycles: (sid: string, limit = 100) =>
    call<CycleSummary[]>(`/api/live/stream/${enc(sid)}/cycles?limit=${limit}`),
  cycle: (cid: string) => call<CycleDetail>(`/api/live/cycles/${enc(cid)}`),
  overlay: (cid: string, points = 800) =>
    call<CycleOverlay>(`/api/live/cycles/${enc(cid)}/overlay?points=${points}`),
  recent: (sid: string, seconds: number) =>
    call<{ sensors: Record<string, { t_ms: number[]; min: number[]; max: number[]; mean: number[]; last: number }> }>(
      `/api/live/stream/${enc(sid)}/recent?seconds=${seconds}`,
    ),
  samples: (sid: string, startMs: number, endMs: number, maxPoints: number) =>
    call<HistorySamples>(`/api/live/stream/${enc(sid)}/samples?${historyQuery(startMs, endMs, maxPoints)}`),
  cycleAlerts: (cid: string) => call<CycleAlerts>(`/api/live/cycles/${enc(cid)}/alerts`),
  alerts: (params: Record<string, string>) =>
    call<AlertRow[]>(`/api/live/alerts?${new URLSearchParams(params).toString()}`),
  // at a central VerTac, a site's alert or reference is sent to the site: {state: "sent", site}
  ack: (alertId: string, user: string, comment = "") =>
    call<{ state?: string; site?: string }>(`/api/live/alerts/${enc(alertId)}/ack`, {
      method: "POST",
      body: JSON.stringify({ user, comment }),
    }),
  useAsReference: (sid: string, cycleId: string, description: string) =>
    call<ReferenceInfo | { state: "sent"; site: string }>(`/api/live/stream/${enc(sid)}/references`, {
      method: "POST",
      body: JSON.stringify({ cycle_ids: [cycleId], activate: true, description }),
    }),
  saveToDataset: (dataset: string, cycleId: string, label: string, note = "") =>
    call<DatasetEntry>(`/api/live/datasets/${enc(dataset)}/cycles`, {
      method: "POST",
      body: JSON.stringify({ cycle_id: cycleId, label, note }),
    }),
  command: (sid: string, command: "start" | "stop") =>
    call<unknown>(`/api/live/cycle/${command}?stream_id=${enc(sid)}`, { method: "POST" }),
};

export const links = {
  samplesCsv: (cid: string) => `/api/live/cycles/${enc(cid)}/samples?format=csv`,
  analysisCsv: (cid: string) => `/api/live/cycles/${enc(cid)}/analysis.csv`,
  reportPdf: (cid: string) => `/api/live/cycles/${enc(cid)}/report.pdf`,
  samples: (sid: string, startMs: number, endMs: number, maxPoints: number, format: "csv" | "parquet") =>
    `/api/live/stream/${enc(sid)}/samples?${historyQuery(startMs, endMs, maxPoints, format)}`,
};
