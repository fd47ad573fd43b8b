// The platform's JSON API (see /api/openapi.json).

export interface Entry {
  run_id: string; experiment: string; model: string; backend: string; precision: string; parallelism: string;
  hardware: string; gpus: number; workload: string; load: string; workload_detail: string; cycles: number; quality: string;
  flags: string[]; simulated: boolean; verification: 'verified' | 'recomputed' | 'failed'; submitter: string;
  started_ns: number; published_ns: number;
  j_per_token: number | null; j_per_token_ci95: number | null; j_per_request: number | null; j_per_request_ci95: number | null;
  tokens_per_s: number | null; ttft_p50_ms: number | null; ttft_p99_ms: number | null; itl_p50_ms: number | null;
  mean_power_w: number | null; energy_j: number | null;
  parameters: number | null; parameters_source?: string;
  moderation?: 'pending' | 'approved' | 'rejected' | 'changes_requested';
}

export interface Decision { run_id: string; decision: string; reason?: string; moderator: string; at_ns: number }
export interface Published { entry: Entry; report: Report | null; decisions?: Decision[] }

export interface Facet { value: string; count: number }

export interface Leaderboard {
  total: number; page: number; per_page: number; sort: string; desc: boolean; rows: Entry[];
  workload: string; notice?: string; facets: Record<string, Facet[]>;
}

export interface Check { name: string; status: string; detail: string }
export interface Report { run_id: string; hash?: string; checks: Check[]; mismatches?: { metric: string; submitted: number | null; recomputed: number | null }[] }

export interface Stat { N: number; Mean: number | null; Std: number | null; CI95: number | null; CV: number | null }
export interface Pct { P: number; Value: number | null; Low: number | null; High: number | null; N: number }
export interface Hist { Min: number; Max: number; Counts: number[]; N: number }

export interface Cycle {
  Cycle: number; From: number; To: number; DurationS: number | null; EnergyJ: number | null; StaticJ: number | null; DynamicJ: number | null;
  DynamicUncJ: number | null; EdgeUncJ: number | null; SystematicJ: number | null; Requests: number; Failed: number;
  PromptTokens: number; OutputTokens: number; JPerToken: number | null; TokensPerJ: number | null; PrefillJ: number | null;
  DecodeJ: number | null; UnattributedJ: number | null; Quality: string; Flags: string[]; Method: string; Attribution: string;
}

export interface RunResult {
  RunID: string; Experiment: string; Backend: string; Model: string; Config: string; Method: string; Devices: string[];
  BaselineW: Record<string, number | null>; BaselineUncW: Record<string, number | null>; Cycles: Cycle[];
  Summary: Record<string, Stat>; Quality: string; Flags: string[]; Simulated: boolean; Label: string;
  Latency: Record<string, Pct[]>; Outliers: { Cycle: number; Metric: string; Value: number; Z: number; MeanWithout: number }[];
  Trends: { Metric: string; S: number; P: number }[];
  Context: null | { SMClockMeanMHz: number | null; SMClockMinMHz: number | null; TempMaxC: number | null; ThrottleReasons: number; StateSamples: number; Gauges: Record<string, number | null>; Increases: Record<string, number | null>; Derived: Record<string, number | null> };
  Server: null | { Requests: number; QueueP50: number | null; PrefillP50: number | null; DecodeP50: number | null; ClientTTFTP50: number | null; ClientDecodeSpanP50: number | null };
  Node: null | { Host: string; Domains: string[]; Cycles: { PackageJ: number | null; DRAMJ: number | null; UncJ: number | null; JPerToken: number | null; Quality: string }[] };
  RequestEnergy: Hist | null; RequestPrefill: Hist | null; RequestDecode: Hist | null;
  Chunks: number; KernelStamped: number;
}

export interface RunPage { entry: Entry; report: Report | null; decisions?: Decision[]; result: RunResult }

export interface Series { device: string; source: string; raw: boolean; t: number[]; min: number[]; max: number[]; mean: number[]; n: number }
export interface Timeline {
  from_ns: number; to_ns: number; bucket_ns: number; series: Series[]; cycles: [number, number, number][];
  requests: { id: string; cycle: number; sent: number; first_token: number; done: number; ok: boolean }[];
  requests_total: number; tokens?: [number, number][];
}

export class APIError extends Error {}

export async function get<T>(path: string): Promise<T> {
  const r = await fetch(path, { headers: { Accept: 'application/json' } });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new APIError((body && body.error) || `${r.status} ${r.statusText}`);
  return body as T;
}
