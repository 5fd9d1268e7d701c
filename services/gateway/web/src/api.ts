// The gateway's REST API as the dashboard uses it. Types mirror schemas/messages.py.

export interface SensorSpec {
  id: string;
  name: string;
  type: string;
  unit: string;
  rate_hz: number;
}

export interface StreamRegistered {
  stream_id: string;
  device_name: string;
  description: string;
  sensors: SensorSpec[];
}

export interface StreamStatus {
  stream_id: string;
  registered: boolean;
  device_name: string | null;
  sensors: SensorSpec[];
  cycle_state: string;
  frames_persisted: number;
  samples_persisted: number;
  last_seq: number | null;
  last_sample_at: string | null;
}

export interface CycleSummary {
  cycle_id: string;
  stream_id: string;
  cycle_no: number;
  state: string;
  started_at: string | null;
  ended_at: string | null;
  duration_s: number | null;
  end_reason: string;
  samples: Record<string, number>;
  frames: number;
  gaps: number;
  completeness: number;
  health_score: number | null;
  risk_class: string | null;
  reference_version: number | null;
}

export interface SensorStats {
  min: number;
  max: number;
  mean: number;
  std: number;
  rms: number;
}

export interface SensorDeviation {
  sensor_id: string;
  sensor_type: string;
  unit: string;
  euclidean: number;
  dtw: number;
  max_deviation: number;
  max_deviation_at_s: number;
  mean_deviation: number;
  outside_envelope_share: number;
  offset: number;
  offset_z: number;
  shape_z: number;
  severity: number;
  timing_share: number;
  magnitude_share: number;
  max_lag_s: number;
  pattern: string;
  contribution: number;
  cycle_stats: SensorStats;
  reference_stats: SensorStats;
}

export interface Recommendation {
  sensor_id: string;
  pattern: string;
  text: string;
  evidence: string;
}

export interface AnalysisCompleted {
  stream_id: string;
  cycle_id: string;
  reference_version: number | null;
  health_score: number;
  risk_class: string;
  aborted: boolean;
  end_reason: string;
  qualified: boolean;
  qualification: string;
  duration_s: number;
  reference_duration_s: number;
  timing_share: number;
  sensors: SensorDeviation[];
  first_deviation: { sensor_id: string; at_s: number; z: number } | null;
  recommendations: Recommendation[];
}

export interface CycleDetail {
  cycle: CycleSummary;
  analysis: AnalysisCompleted | null;
}

export interface OverlaySensor {
  sensor_id: string;
  unit: string;
  t_s: number[];
  value: number[];
  ref_t_s: number[];
  ref_mean: number[];
  ref_lower: number[];
  ref_upper: number[];
}

export interface CycleOverlay {
  cycle_id: string;
  reference_version: number | null;
  sensors: OverlaySensor[];
}

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

export interface AlertGroup {
  severity: "info" | "warning" | "critical";
  rule: string;
  kind: string;
  sensor_id: string | null;
  alerts: number;
  occurrences: number;
  first_raised_at: string;
  last_message: string;
}

export interface CycleAlerts {
  cycle_id: string;
  groups: AlertGroup[];
}

export interface AlertChanged {
  alert_id: string;
  stream_id: string;
  rule_id: string;
  kind: string;
  severity: "info" | "warning" | "critical";
  state: "raised" | "acknowledged" | "cleared";
  message: string;
  at: string;
  sensor_id: string | null;
  value: number | null;
  occurrences: number;
  raised_at: string | null;
  acknowledged_by: string | null;
}

export interface CycleStateChanged {
  stream_id: string;
  cycle_id: string;
  state: "running" | "completed" | "aborted";
  at: string;
  reason: string;
  cycle_no: number;
  started_at: string | null;
  duration_s: number | null;
  samples: Record<string, number>;
  completeness: number;
}

export interface ReferenceInfo {
  stream_id: string;
  reference_version: number;
  active: boolean;
  source_cycles: string[];
  description: string;
}

export interface DatasetEntry {
  dataset: string;
  cycle_id: string;
  label: string;
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

export const api = {
  streams: () => call<StreamRegistered[]>("/api/live/streams"),
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
  cycleAlerts: (cid: string) => call<CycleAlerts>(`/api/live/cycles/${enc(cid)}/alerts`),
  alerts: (params: Record<string, string>) =>
    call<AlertRow[]>(`/api/live/alerts?${new URLSearchParams(params).toString()}`),
  ack: (alertId: string, user: string, comment = "") =>
    call<unknown>(`/api/live/alerts/${enc(alertId)}/ack`, {
      method: "POST",
      body: JSON.stringify({ user, comment }),
    }),
  useAsReference: (sid: string, cycleId: string, description: string) =>
    call<ReferenceInfo>(`/api/live/stream/${enc(sid)}/references`, {
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
};
