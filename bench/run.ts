/**
 * The benchmark: what idempotency costs on tRPC and gRPC, how far that is from the physical floor of the
 * database work it needs, and how it compares with a peer library on the same workload.
 *
 *   node --import tsx bench/run.ts            full run (~1-3 minutes), writes bench/results/latest.{json,md}
 *                                             and bench/results/latency.svg
 *   BENCH_QUICK=1 node --import tsx bench/run.ts   CI smoke run (seconds), writes bench/results/quick.*
 *
 * Knobs (positive integers): BENCH_ITERATIONS (timed calls per latency scenario, default 2000, quick 100),
 * BENCH_WARMUP (untimed calls first, default 200, quick 20), BENCH_BATCH (calls per scenario per interleaving
 * round, default 50, quick 10), BENCH_THROUGHPUT_CALLS (default 4000, quick 320), BENCH_CONCURRENCY (default
 * 32), BENCH_STORM_KEYS / BENCH_STORM_DUPLICATES (default 50 x 8, quick 20 x 4).
 *
 * Method (see bench/lib/stats.ts): every figure is a median (and p99) over sequential calls; scenarios that are
 * compared are measured interleaved in one group, so every ratio is taken between numbers measured at the same
 * moment of the same run. No absolute time here means much on its own: the machine is shared and noisy.
 *
 * Needs PostgreSQL (and Redis for the peer) as the tests do (test/support/databases.ts); what is unreachable is
 * skipped and listed in the results, never silently.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import memoryAdapter from '@node-idempotency/storage-adapter-memory';
import redisAdapter from '@node-idempotency/storage-adapter-redis';
import {
  createIdempotencyService,
  createMemoryStore,
  type IdempotencyService,
  type IdempotencyStore,
} from '../src/index.js';
import { createPrismaStore } from '../src/stores/prisma/index.js';
import { createTestDatabase, providerAvailable, type TestDatabase } from '../test/support/databases.js';
import { countingStore, describeCounts, totalCount } from './lib/counting.js';
import { openDriverShim } from './lib/driver-shim.js';
import { type Floor, openFloor } from './lib/floor.js';
import {
  type CallEnd,
  countingPeerStorage,
  createPeer,
  createProcedure,
  type KeyedCall,
  ourCall,
  peerCall,
} from './lib/service-level.js';
import { envInt, type LatencySummary, measureInterleaved, runConcurrently, type Scenario } from './lib/stats.js';
import { barChart, type ChartGroup } from './lib/svg.js';
import { startGrpc, startTrpc, type TransportHarness } from './lib/transports.js';

const QUICK = process.env.BENCH_QUICK === '1' || process.env.BENCH_QUICK === 'true';
const CONFIG = {
  iterations: envInt('BENCH_ITERATIONS', QUICK ? 100 : 2000),
  warmup: envInt('BENCH_WARMUP', QUICK ? 20 : 200),
  batch: envInt('BENCH_BATCH', QUICK ? 10 : 50),
  throughputCalls: envInt('BENCH_THROUGHPUT_CALLS', QUICK ? 320 : 4000),
  concurrency: envInt('BENCH_CONCURRENCY', 32),
  stormKeys: envInt('BENCH_STORM_KEYS', QUICK ? 20 : 50),
  stormDuplicates: envInt('BENCH_STORM_DUPLICATES', QUICK ? 4 : 8),
};
const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
const OUTPUT = QUICK
  ? { json: 'quick.json', md: 'quick.md', svg: 'quick-latency.svg' }
  : { json: 'latest.json', md: 'latest.md', svg: 'latency.svg' };
const REDIS_URL = process.env.RPC_IDEMPOTENCY_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** The size of the stored result the floor writes: about what our JSON codec stores for the bench's payment. */
const FLOOR_RESULT_BYTES = 96;
/** The in-process record cache of the `cached` services. */
const CACHE = { maxEntries: 10_000 } as const;

type Database = 'sqlite' | 'postgresql';
const DATABASES: readonly Database[] = ['sqlite', 'postgresql'];
const SCENARIOS = ['bare', 'first', 'replay', 'cached replay'] as const;
type TransportScenario = (typeof SCENARIOS)[number];

const started = Date.now();
const log = (message: string) => console.error(`[bench +${((Date.now() - started) / 1000).toFixed(0)}s] ${message}`);
const skipped: string[] = [];
const round = (value: number, digits = 0) => Number(value.toFixed(digits));

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`bench: ${message}`);
}

function versionOf(name: string): string {
  try {
    const path = fileURLToPath(new URL(`../node_modules/${name}/package.json`, import.meta.url));
    return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

// ───────────────────────── databases ─────────────────────────

interface OpenDatabase {
  readonly name: Database;
  readonly db: TestDatabase;
  /** The client the store uses (PostgreSQL: its own pool of 10, pg's default; SQLite: the one client). */
  readonly prisma: TestDatabase['prisma'];
  readonly store: IdempotencyStore;
  readonly services: { idempotent: IdempotencyService; cached: IdempotencyService };
  readonly floor: Floor;
}

async function openDatabase(name: Database): Promise<OpenDatabase> {
  const db = await createTestDatabase(name);
  const prisma = name === 'postgresql' ? await db.createClient({ poolSize: 10 }) : db.prisma;
  const store = createPrismaStore(prisma);
  return {
    name,
    db,
    prisma,
    store,
    services: {
      idempotent: createIdempotencyService({ store }),
      cached: createIdempotencyService({ store, cache: CACHE }),
    },
    floor: await openFloor(db, FLOOR_RESULT_BYTES),
  };
}

// ───────────────────────── 1. transports vs the floor ─────────────────────────

interface LatencyRow {
  database: Database;
  transport: 'trpc' | 'grpc';
  scenario: TransportScenario;
  medianUs: number;
  p99Us: number;
  samples: number;
}
interface FloorRow {
  database: Database;
  operation: 'INSERT + UPDATE' | 'primary-key read';
  medianUs: number;
  p99Us: number;
}
interface OverheadRow {
  database: Database;
  transport: 'trpc' | 'grpc';
  bareUs: number;
  firstUs: number;
  firstOverheadUs: number;
  floorWriteUs: number;
  overheadToFloor: number;
  replayOverheadUs: number;
  floorReadUs: number;
  replayOverheadToRead: number;
  cachedReplayOverheadUs: number;
}

async function benchTransports(
  open: OpenDatabase,
  harnesses: readonly TransportHarness[],
): Promise<{ latency: LatencyRow[]; floors: FloorRow[]; overhead: OverheadRow[] }> {
  const scenarios: Scenario[] = [
    { id: 'floor:write', run: () => open.floor.writePair() },
    { id: 'floor:read', run: () => open.floor.read() },
  ];
  const seeds: { harness: TransportHarness; replayKey: string; replayId: string; cachedKey: string }[] = [];
  for (const harness of harnesses) {
    const replayKey = `replay-${randomUUID()}`;
    const cachedKey = `cached-${randomUUID()}`;
    const replayId = await harness.call('idempotent', replayKey);
    const cachedId = await harness.call('cached', cachedKey);
    seeds.push({ harness, replayKey, replayId, cachedKey });
    const t = harness.transport;
    scenarios.push(
      { id: `${t}:bare`, run: () => harness.call('bare', randomUUID()) },
      { id: `${t}:first`, run: () => harness.call('idempotent', randomUUID()) },
      {
        id: `${t}:replay`,
        run: async () => check((await harness.call('idempotent', replayKey)) === replayId, `${t} replay differs`),
      },
      {
        id: `${t}:cached replay`,
        run: async () => check((await harness.call('cached', cachedKey)) === cachedId, `${t} cached replay differs`),
      },
    );
  }
  const results = await measureInterleaved(scenarios, CONFIG);
  for (const { harness } of seeds) {
    // Every `first` call ran the handler once, every replay none: 1 seed + warm-up + timed firsts.
    check(
      harness.runs.idempotent === 1 + CONFIG.warmup + CONFIG.iterations,
      `${harness.transport}/${open.name}: the idempotent handler ran ${harness.runs.idempotent} times; replays must not run it`,
    );
    check(harness.runs.cached === 1, `${harness.transport}/${open.name}: a cached replay ran the handler`);
  }
  const get = (id: string) => results.get(id) as LatencySummary;
  const floors: FloorRow[] = [
    { database: open.name, operation: 'INSERT + UPDATE', ...pick(get('floor:write')) },
    { database: open.name, operation: 'primary-key read', ...pick(get('floor:read')) },
  ];
  const latency: LatencyRow[] = [];
  const overhead: OverheadRow[] = [];
  for (const { harness } of seeds) {
    const t = harness.transport;
    for (const scenario of SCENARIOS) {
      latency.push({ database: open.name, transport: t, scenario, ...get(`${t}:${scenario}`) });
    }
    const bare = get(`${t}:bare`).medianUs;
    const first = get(`${t}:first`).medianUs;
    const write = get('floor:write').medianUs;
    const read = get('floor:read').medianUs;
    overhead.push({
      database: open.name,
      transport: t,
      bareUs: bare,
      firstUs: first,
      firstOverheadUs: first - bare,
      floorWriteUs: write,
      overheadToFloor: (first - bare) / write,
      replayOverheadUs: get(`${t}:replay`).medianUs - bare,
      floorReadUs: read,
      replayOverheadToRead: (get(`${t}:replay`).medianUs - bare) / read,
      cachedReplayOverheadUs: get(`${t}:cached replay`).medianUs - bare,
    });
  }
  return { latency, floors, overhead };
}

const pick = (summary: LatencySummary) => ({ medianUs: summary.medianUs, p99Us: summary.p99Us });

// ───────────────────────── 2. round trips, counted ─────────────────────────

interface RoundTripRow {
  backend: string;
  call: string;
  storeOperations: string;
  storeOperationCount: number;
  /** SQL statements Prisma sent (its query log), or Redis commands for the peer. */
  statements: number | null;
}

async function countRoundTrips(open: OpenDatabase): Promise<RoundTripRow[]> {
  let statements = 0;
  // A separate client with Prisma's query log on: logging would distort the timed client, counting it is fine.
  const client = await open.db.createClient({ poolSize: 2, onQuery: () => void statements++ });
  const store = countingStore(createPrismaStore(client));
  const plain = createIdempotencyService({ store });
  const cached = createIdempotencyService({ store, cache: CACHE });
  const procedure = createProcedure();
  const rows: RoundTripRow[] = [];
  const measure = async (call: string, act: () => Promise<unknown>) => {
    store.reset();
    statements = 0;
    await act();
    rows.push({
      backend: `ours, Prisma ${open.name}`,
      call,
      storeOperations: describeCounts(store.counts),
      storeOperationCount: totalCount(store.counts),
      statements,
    });
  };
  const key = randomUUID();
  await measure('first execution', async () => check((await ourCall(plain, procedure)(key)) === 'executed', 'first'));
  await measure('replay', async () => check((await ourCall(plain, procedure)(key)) === 'replayed', 'replay'));
  await ourCall(cached, procedure)(key); // fills the cache from the store
  await measure('cached replay', async () => check((await ourCall(cached, procedure)(key)) === 'replayed', 'cached'));
  // A duplicate while the first call still runs: hold the first call's handler until the duplicate is counted.
  const running = randomUUID();
  let releaseHandler: () => void = () => undefined;
  let entered: () => void = () => undefined;
  const inHandler = new Promise<void>((resolve) => {
    entered = resolve;
  });
  const holding = plain.execute({
    procedure: 'payments.create',
    key: running,
    fingerprint: 'held',
    codec: { name: 'json', encode: () => new Uint8Array([123, 125]), decode: () => ({}) },
    run: () =>
      new Promise((resolve) => {
        releaseHandler = () => resolve({});
        entered();
      }),
  });
  await inHandler;
  await measure('duplicate while running (IN_PROGRESS)', async () => {
    const outcome = await plain
      .execute({
        procedure: 'payments.create',
        key: running,
        fingerprint: 'held',
        codec: { name: 'json', encode: () => new Uint8Array(), decode: () => ({}) },
        run: async () => ({}),
      })
      .then(
        () => 'ran',
        (error: { code?: string }) => error.code,
      );
    check(outcome === 'IN_PROGRESS', `a duplicate of a running call answered ${String(outcome)}`);
  });
  releaseHandler();
  await holding;
  await measure('first execution, handler fails (retryable: released)', async () => {
    const outcome = await plain.execute({
      procedure: 'payments.create',
      key: randomUUID(),
      fingerprint: 'f',
      codec: { name: 'json', encode: () => new Uint8Array(), decode: () => ({}) },
      run: async () => {
        throw new Error('transient');
      },
    });
    check(!outcome.ok, 'the failing handler succeeded');
  });
  await client.$disconnect();
  return rows;
}

async function countPeerRoundTrips(
  name: string,
  storage: ConstructorParameters<typeof import('@node-idempotency/core').Idempotency>[0],
  /** This run's key prefix, so the keys are deleted with the run's others. */
  prefix: string,
): Promise<RoundTripRow[]> {
  const counting = countingPeerStorage(storage);
  const peer = createPeer(counting.storage, `${prefix}-rt`);
  const procedure = createProcedure();
  const call = peerCall(peer, procedure);
  const rows: RoundTripRow[] = [];
  const measure = async (label: string, act: () => Promise<unknown>) => {
    for (const operation of Object.keys(counting.counts)) counting.counts[operation] = 0;
    await act();
    rows.push({
      backend: `peer, ${name}`,
      call: label,
      storeOperations: describeCounts(counting.counts),
      storeOperationCount: totalCount(counting.counts),
      statements: name === 'Redis' ? totalCount(counting.counts) : null,
    });
  };
  const key = randomUUID();
  await measure('first execution', async () => check((await call(key)) === 'executed', 'peer first'));
  await measure('replay', async () => check((await call(key)) === 'replayed', 'peer replay'));
  rows.push({
    backend: `peer, ${name}`,
    call: 'cached replay',
    storeOperations: 'n/a (no in-process cache)',
    storeOperationCount: Number.NaN,
    statements: null,
  });
  // A duplicate while the first call still runs: its onRequest has claimed, its onResponse has not come yet.
  const running = randomUUID();
  const request = {
    headers: { 'idempotency-key': running },
    path: '/payments.create',
    method: 'POST',
    body: { amount: 1 },
  };
  check((await peer.onRequest(request)) === undefined, 'peer: the first onRequest found a stored response');
  await measure('duplicate while running (IN_PROGRESS)', async () => {
    const outcome = await peer.onRequest(request).then(
      () => 'ran',
      (error: { code?: string }) => error.code,
    );
    check(outcome === 'REQUEST_IN_PROGRESS', `peer duplicate answered ${String(outcome)}`);
  });
  await peer.onResponse(request, { body: {} });
  rows.push({
    backend: `peer, ${name}`,
    call: 'first execution, handler fails (retryable: released)',
    storeOperations: 'n/a (no release: the key stays IN_PROGRESS until its TTL unless the app deletes it)',
    storeOperationCount: Number.NaN,
    statements: null,
  });
  return rows;
}

// ───────────────────────── 3. throughput ─────────────────────────

interface ThroughputRow {
  database: Database;
  transport: 'trpc' | 'grpc';
  mode: 'bare' | 'idempotent';
  calls: number;
  concurrency: number;
  wallMs: number;
  callsPerSecond: number;
}

async function benchThroughput(open: OpenDatabase, harnesses: readonly TransportHarness[]): Promise<ThroughputRow[]> {
  const rows: ThroughputRow[] = [];
  for (const harness of harnesses) {
    const totals = { bare: 0, idempotent: 0 };
    // Warm the sockets and the pool at full concurrency, then alternate bare and idempotent twice each.
    await runConcurrently(CONFIG.concurrency * 4, CONFIG.concurrency, () => harness.call('bare', randomUUID()));
    await runConcurrently(CONFIG.concurrency * 4, CONFIG.concurrency, () => harness.call('idempotent', randomUUID()));
    const runsBefore = harness.runs.idempotent;
    for (let rep = 0; rep < 2; rep++) {
      for (const mode of ['bare', 'idempotent'] as const) {
        totals[mode] += await runConcurrently(CONFIG.throughputCalls, CONFIG.concurrency, () =>
          harness.call(mode, randomUUID()),
        );
      }
    }
    check(
      harness.runs.idempotent - runsBefore === 2 * CONFIG.throughputCalls,
      `${harness.transport} throughput: distinct keys must each run once`,
    );
    for (const mode of ['bare', 'idempotent'] as const) {
      const calls = 2 * CONFIG.throughputCalls;
      rows.push({
        database: open.name,
        transport: harness.transport,
        mode,
        calls,
        concurrency: CONFIG.concurrency,
        wallMs: totals[mode],
        callsPerSecond: (calls / totals[mode]) * 1000,
      });
    }
  }
  return rows;
}

// ───────────────────────── 4. the peer, service level ─────────────────────────

interface PeerLatencyRow {
  id: string;
  medianUs: number;
  p99Us: number;
}
interface PeerRatioRow {
  pairing: string;
  oursFirstOverheadUs: number;
  peerFirstOverheadUs: number;
  firstRatio: number;
  oursReplayOverheadUs: number;
  peerReplayOverheadUs: number;
  replayRatio: number;
  oursFirstToOwnFloor: number | null;
  peerFirstToOwnFloor: number | null;
}
interface StormRow {
  library: string;
  backend: string;
  keys: number;
  duplicates: number;
  wallMs: number;
  keysRunExactlyOnce: number;
  executed: number;
  replayed: number;
  inProgress: number;
}

async function storm(
  library: string,
  backend: string,
  make: (procedure: ReturnType<typeof createProcedure>) => KeyedCall,
) {
  const procedure = createProcedure();
  const call = make(procedure);
  const keys = Array.from({ length: CONFIG.stormKeys }, () => randomUUID());
  const started = performance.now();
  const ends = await Promise.all(
    Array.from({ length: CONFIG.stormDuplicates }, () => keys.map((key) => call(key))).flat(),
  );
  const wallMs = performance.now() - started;
  const count = (end: CallEnd) => ends.filter((value) => value === end).length;
  const row: StormRow = {
    library,
    backend,
    keys: CONFIG.stormKeys,
    duplicates: CONFIG.stormDuplicates,
    wallMs,
    keysRunExactlyOnce: keys.filter((key) => procedure.runs.get(key) === 1).length,
    executed: count('executed'),
    replayed: count('replayed'),
    inProgress: count('in-progress'),
  };
  check(row.keysRunExactlyOnce === keys.length, `${library}/${backend}: a key ran more than once or never`);
  return row;
}

async function benchPeer(opened: readonly OpenDatabase[]): Promise<{
  latency: PeerLatencyRow[];
  ratios: PeerRatioRow[];
  storm: StormRow[];
  roundTrips: RoundTripRow[];
}> {
  const procedure = createProcedure();
  const scenarios: Scenario[] = [{ id: 'bare handler', run: async () => procedure.run(randomUUID()) }];
  const pairs: { id: string; call: KeyedCall }[] = [];
  const addPair = (id: string, call: KeyedCall) => pairs.push({ id, call });

  const memoryStore = createIdempotencyService({ store: createMemoryStore({ maxRecords: 1_000_000 }) });
  addPair('ours, memory', ourCall(memoryStore, procedure));
  addPair('peer, memory', peerCall(createPeer(new memoryAdapter.MemoryStorageAdapter(), 'bench-peer-mem'), procedure));
  for (const open of opened) addPair(`ours, Prisma ${open.name}`, ourCall(open.services.idempotent, procedure));

  let redis: InstanceType<typeof redisAdapter.RedisStorageAdapter> | undefined;
  const redisPrefix = `bench-peer-${randomUUID()}`;
  try {
    const candidate = new redisAdapter.RedisStorageAdapter({
      url: REDIS_URL,
      socket: { connectTimeout: 1_000, reconnectStrategy: false },
    });
    await candidate.connect();
    redis = candidate;
  } catch (error) {
    skipped.push(`peer on Redis: ${REDIS_URL} unreachable (${(error as Error).message})`);
  }
  if (redis) addPair('peer, Redis', peerCall(createPeer(redis, redisPrefix), procedure));

  for (const { id, call } of pairs) {
    const replayKey = randomUUID();
    check((await call(replayKey)) === 'executed', `${id}: seeding the replay key`);
    scenarios.push(
      { id: `${id}: first`, run: async () => check((await call(randomUUID())) === 'executed', `${id} first`) },
      { id: `${id}: replay`, run: async () => check((await call(replayKey)) === 'replayed', `${id} replay`) },
    );
  }
  for (const open of opened) {
    scenarios.push(
      { id: `floor ${open.name}: INSERT + UPDATE`, run: () => open.floor.writePair() },
      { id: `floor ${open.name}: read`, run: () => open.floor.read() },
    );
  }
  if (redis) {
    const client = redis;
    const readKey = `${redisPrefix}:floor-read`;
    await client.set(readKey, '{"status":"COMPLETE"}', { ttl: 600_000 });
    scenarios.push(
      {
        id: 'floor Redis: SET NX + SET',
        run: async () => {
          const key = `${redisPrefix}:floor:${randomUUID()}`;
          check(await client.setIfNotExists(key, '{"status":"IN_PROGRESS"}', { ttl: 600_000 }), 'redis SET NX');
          await client.set(key, '{"status":"COMPLETE","response":{"body":{}}}', { ttl: 600_000 });
        },
      },
      {
        id: 'floor Redis: GET',
        run: async () => check((await client.get(readKey)) !== undefined, 'redis GET'),
      },
    );
  }
  const results = await measureInterleaved(scenarios, CONFIG);
  const latency = scenarios.map((scenario) => ({
    id: scenario.id,
    ...pick(results.get(scenario.id) as LatencySummary),
  }));
  const median = (id: string) => (results.get(id) as LatencySummary | undefined)?.medianUs ?? Number.NaN;
  const bare = median('bare handler');
  const ratio = (ours: string, peer: string, oursFloor: string | null, peerFloor: string | null): PeerRatioRow => {
    const oursFirst = median(`${ours}: first`) - bare;
    const peerFirst = median(`${peer}: first`) - bare;
    const oursReplay = median(`${ours}: replay`) - bare;
    const peerReplay = median(`${peer}: replay`) - bare;
    return {
      pairing: `${ours} vs ${peer}`,
      oursFirstOverheadUs: oursFirst,
      peerFirstOverheadUs: peerFirst,
      firstRatio: oursFirst / peerFirst,
      oursReplayOverheadUs: oursReplay,
      peerReplayOverheadUs: peerReplay,
      replayRatio: oursReplay / peerReplay,
      oursFirstToOwnFloor: oursFloor === null ? null : oursFirst / median(oursFloor),
      peerFirstToOwnFloor: peerFloor === null ? null : peerFirst / median(peerFloor),
    };
  };
  const ratios: PeerRatioRow[] = [ratio('ours, memory', 'peer, memory', null, null)];
  if (redis) {
    for (const open of opened) {
      ratios.push(
        ratio(
          `ours, Prisma ${open.name}`,
          'peer, Redis',
          `floor ${open.name}: INSERT + UPDATE`,
          'floor Redis: SET NX + SET',
        ),
      );
    }
  }

  const storms: StormRow[] = [];
  storms.push(
    await storm('ours', 'memory', (p) => ourCall(createIdempotencyService({ store: createMemoryStore() }), p)),
  );
  storms.push(
    await storm('peer', 'memory', (p) =>
      peerCall(createPeer(new memoryAdapter.MemoryStorageAdapter(), `bench-storm-${randomUUID()}`), p),
    ),
  );
  for (const open of opened) {
    storms.push(await storm('ours', `Prisma ${open.name}`, (p) => ourCall(open.services.idempotent, p)));
  }
  const roundTrips = await countPeerRoundTrips('memory', new memoryAdapter.MemoryStorageAdapter(), redisPrefix);
  if (redis) {
    const client = redis;
    storms.push(await storm('peer', 'Redis', (p) => peerCall(createPeer(client, `${redisPrefix}-storm`), p)));
    roundTrips.push(...(await countPeerRoundTrips('Redis', client, redisPrefix)));
    await deleteRedisKeys(client, redisPrefix);
    await client.disconnect();
  }
  return { latency, ratios, storm: storms, roundTrips };
}

/** Remove this run's keys from the shared Redis (the peer's adapter has no delete, so use a raw client). */
async function deleteRedisKeys(adapter: object, prefix: string): Promise<void> {
  // The adapter keeps its node-redis client in a private field; reaching for it here beats leaving keys behind.
  const client = (
    adapter as { client?: { scanIterator(o: object): AsyncIterable<string>; del(k: string[]): Promise<unknown> } }
  ).client;
  if (!client) return;
  const batch: string[] = [];
  for await (const key of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
    batch.push(key);
    if (batch.length >= 500) await client.del(batch.splice(0));
  }
  if (batch.length > 0) await client.del(batch);
}

// ───────────────────────── where the time goes ─────────────────────────

interface BreakdownRow {
  database: Database;
  step: string;
  medianUs: number;
  p99Us: number;
  addsUs: number | null;
}

async function benchBreakdown(open: OpenDatabase): Promise<BreakdownRow[]> {
  const shim = await openDriverShim(open.db);
  try {
    const viaDriver = createPrismaStore(shim.client, { provider: open.name });
    const viaPrisma = open.store;
    const memory = createIdempotencyService({ store: createMemoryStore({ maxRecords: 1_000_000 }) });
    const procedure = createProcedure();
    const pair = (store: IdempotencyStore) => async () => {
      const now = Date.now();
      const key = randomUUID();
      const ownerToken = randomUUID();
      const claim = await store.claim({
        scope: '',
        key,
        fingerprint: 'f'.repeat(64),
        procedure: 'payments.create',
        ownerToken,
        now,
        lockedUntil: now + 30_000,
        expiresAt: now + 86_400_000,
      });
      check(claim.claimed, 'breakdown: a fresh key was not claimed');
      const done = await store.complete({
        scope: '',
        key,
        ownerToken,
        status: 'SUCCEEDED',
        result: new Uint8Array(FLOOR_RESULT_BYTES).fill(7),
        resultCode: null,
        codec: 'json',
      });
      check(done, 'breakdown: completion refused');
    };
    const first = ourCall(open.services.idempotent, procedure);
    const memoryFirst = ourCall(memory, procedure);
    // A finished record to replay: claims on it lose and return it, which is all a replay asks of the store.
    const finishedKey = randomUUID();
    check((await first(finishedKey)) === 'executed', 'breakdown: seeding the replay key');
    const claimFinished = (store: IdempotencyStore) => async () => {
      const now = Date.now();
      const claim = await store.claim({
        scope: '',
        key: finishedKey,
        fingerprint: 'f'.repeat(64),
        procedure: 'payments.create',
        ownerToken: randomUUID(),
        now,
        lockedUntil: now + 30_000,
        expiresAt: now + 86_400_000,
      });
      check(!claim.claimed, 'breakdown: a claim on a finished record won');
    };
    // A record still running (a live lease for the whole run): claims on it lose, as a duplicate of a running call.
    const runningKey = randomUUID();
    const seeded = Date.now();
    const seed = await open.store.claim({
      scope: '',
      key: runningKey,
      fingerprint: 'f'.repeat(64),
      procedure: 'payments.create',
      ownerToken: randomUUID(),
      now: seeded,
      lockedUntil: seeded + 3_600_000,
      expiresAt: seeded + 86_400_000,
    });
    check(seed.claimed, 'breakdown: seeding the running key');
    const claimRunning = (store: IdempotencyStore) => async () => {
      const now = Date.now();
      const claim = await store.claim({
        scope: '',
        key: runningKey,
        fingerprint: 'f'.repeat(64),
        procedure: 'payments.create',
        ownerToken: randomUUID(),
        now,
        lockedUntil: now + 30_000,
        expiresAt: now + 86_400_000,
      });
      check(!claim.claimed && claim.existing.status === 'IN_PROGRESS', 'breakdown: a claim on a running record won');
    };
    const scenarios: Scenario[] = [
      { id: 'SELECT 1, driver', run: async () => shim.client.$queryRawUnsafe('SELECT 1') },
      { id: 'SELECT 1, Prisma $queryRawUnsafe', run: async () => open.prisma.$queryRawUnsafe('SELECT 1') },
      { id: 'floor', run: () => open.floor.writePair() },
      { id: 'store pair, driver', run: pair(viaDriver) },
      { id: 'store pair, Prisma', run: pair(viaPrisma) },
      { id: 'service first, Prisma', run: () => first(randomUUID()) },
      { id: 'service first, memory store', run: () => memoryFirst(randomUUID()) },
      { id: 'floor read', run: () => open.floor.read() },
      { id: 'claim finished, driver', run: claimFinished(viaDriver) },
      { id: 'claim finished, Prisma', run: claimFinished(viaPrisma) },
      { id: 'service replay, Prisma', run: async () => check((await first(finishedKey)) === 'replayed', 'replay') },
      { id: 'claim running, driver', run: claimRunning(viaDriver) },
      { id: 'claim running, Prisma', run: claimRunning(viaPrisma) },
    ];
    const results = await measureInterleaved(scenarios, CONFIG);
    const m = (id: string) => (results.get(id) as LatencySummary).medianUs;
    const row = (step: string, id: string, addsUs: number | null): BreakdownRow => ({
      database: open.name,
      step,
      ...pick(results.get(id) as LatencySummary),
      addsUs,
    });
    return [
      row('floor: plain INSERT + UPDATE, driver, prepared', 'floor', null),
      row('our claim + complete SQL, bare driver', 'store pair, driver', m('store pair, driver') - m('floor')),
      row(
        'our claim + complete SQL, through Prisma',
        'store pair, Prisma',
        m('store pair, Prisma') - m('store pair, driver'),
      ),
      row(
        'service.execute first (fingerprint, codec, lease timer)',
        'service first, Prisma',
        m('service first, Prisma') - m('store pair, Prisma'),
      ),
      row('SELECT 1, bare driver', 'SELECT 1, driver', null),
      row(
        'SELECT 1, Prisma $queryRawUnsafe',
        'SELECT 1, Prisma $queryRawUnsafe',
        m('SELECT 1, Prisma $queryRawUnsafe') - m('SELECT 1, driver'),
      ),
      row('service.execute first on the memory store (our CPU only)', 'service first, memory store', null),
      row('replay floor: primary-key read, driver, prepared', 'floor read', null),
      row(
        'replay: our claim on a finished key, bare driver',
        'claim finished, driver',
        m('claim finished, driver') - m('floor read'),
      ),
      row(
        'replay: our claim on a finished key, through Prisma',
        'claim finished, Prisma',
        m('claim finished, Prisma') - m('claim finished, driver'),
      ),
      row(
        'replay: service.execute',
        'service replay, Prisma',
        m('service replay, Prisma') - m('claim finished, Prisma'),
      ),
      row(
        'duplicate while running: our claim on an IN_PROGRESS key, bare driver',
        'claim running, driver',
        m('claim running, driver') - m('floor read'),
      ),
      row(
        'duplicate while running: our claim on an IN_PROGRESS key, through Prisma',
        'claim running, Prisma',
        m('claim running, Prisma') - m('claim running, driver'),
      ),
    ];
  } finally {
    await shim.close();
  }
}

// ───────────────────────── output ─────────────────────────

const us = (value: number) => (Number.isFinite(value) ? `${value.toFixed(0)} µs` : 'n/a');
const x = (value: number | null) => (value === null || !Number.isFinite(value) ? 'n/a' : `${value.toFixed(2)}x`);

function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  return [
    `| ${headers.join(' | ')} |`,
    `|${headers.map(() => '---').join('|')}|`,
    ...rows.map((row) => `| ${row.join(' | ')} |`),
  ].join('\n');
}

async function main(): Promise<void> {
  const load = { start: loadavg().map((v) => round(v, 2)), end: [] as number[] };
  log(`config ${JSON.stringify(CONFIG)}${QUICK ? ' (quick mode)' : ''}`);
  const opened: OpenDatabase[] = [];
  for (const name of DATABASES) {
    if (!(await providerAvailable(name))) {
      skipped.push(`${name}: server unreachable`);
      continue;
    }
    opened.push(await openDatabase(name));
  }
  check(opened.length > 0, 'no database reachable');

  const latency: LatencyRow[] = [];
  const floors: FloorRow[] = [];
  const overhead: OverheadRow[] = [];
  const roundTrips: RoundTripRow[] = [];
  const throughput: ThroughputRow[] = [];
  const breakdown: BreakdownRow[] = [];
  try {
    for (const open of opened) {
      const harnesses = [await startTrpc(open.services), await startGrpc(open.services)];
      try {
        log(`${open.name}: transport latency`);
        const result = await benchTransports(open, harnesses);
        latency.push(...result.latency);
        floors.push(...result.floors);
        overhead.push(...result.overhead);
        if (open.name === 'postgresql') {
          log(`${open.name}: throughput with ${CONFIG.concurrency} concurrent clients`);
          throughput.push(...(await benchThroughput(open, harnesses)));
        }
      } finally {
        for (const harness of harnesses) await harness.close();
      }
      log(`${open.name}: round trips`);
      roundTrips.push(...(await countRoundTrips(open)));
      log(`${open.name}: where the time goes`);
      breakdown.push(...(await benchBreakdown(open)));
    }
    log('peer comparison (service level)');
    const peer = await benchPeer(opened);
    roundTrips.push(...peer.roundTrips);
    load.end = loadavg().map((v) => round(v, 2));

    const meta = {
      date: new Date().toISOString(),
      mode: QUICK ? 'quick' : 'full',
      config: CONFIG,
      durationSeconds: round((Date.now() - started) / 1000),
      node: process.version,
      cpus: `${cpus().length} x ${cpus()[0]?.model ?? 'unknown'}`,
      loadAverage: load,
      versions: Object.fromEntries(
        [
          '@prisma/client',
          '@prisma/adapter-pg',
          '@prisma/adapter-better-sqlite3',
          'pg',
          'better-sqlite3',
          '@trpc/server',
          '@grpc/grpc-js',
          '@node-idempotency/core',
          '@node-idempotency/storage-adapter-redis',
          'redis',
        ].map((name) => [name, versionOf(name)]),
      ),
      skipped,
    };
    const results = { meta, latency, floors, overhead, roundTrips, throughput, peer, breakdown };
    const markdown = renderMarkdown(results);
    console.log(markdown);
    await mkdir(RESULTS_DIR, { recursive: true });
    await writeFile(new URL(OUTPUT.json, `file://${RESULTS_DIR}`), `${JSON.stringify(results, roundNumbers, 2)}\n`);
    await writeFile(new URL(OUTPUT.md, `file://${RESULTS_DIR}`), markdown);
    await writeFile(new URL(OUTPUT.svg, `file://${RESULTS_DIR}`), renderChart(results));
    log(`wrote bench/results/${OUTPUT.json}, ${OUTPUT.md}, ${OUTPUT.svg}`);
  } finally {
    for (const open of opened) {
      await open.floor.close();
      await open.db.drop();
    }
  }
}

/** JSON numbers to at most 2 decimals: sub-microsecond digits are noise. */
function roundNumbers(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isInteger(value) && Number.isFinite(value) ? round(value, 2) : value;
}

type Results = {
  meta: {
    date: string;
    mode: string;
    config: typeof CONFIG;
    durationSeconds: number;
    node: string;
    cpus: string;
    loadAverage: { start: number[]; end: number[] };
    skipped: string[];
  };
  latency: LatencyRow[];
  floors: FloorRow[];
  overhead: OverheadRow[];
  roundTrips: RoundTripRow[];
  throughput: ThroughputRow[];
  peer: Awaited<ReturnType<typeof benchPeer>>;
  breakdown: BreakdownRow[];
};

function renderMarkdown(r: Results): string {
  const lat = (database: string, transport: string, scenario: string) =>
    r.latency.find((row) => row.database === database && row.transport === transport && row.scenario === scenario);
  const cell = (row: LatencyRow | undefined) => (row ? `${us(row.medianUs)} (p99 ${us(row.p99Us)})` : 'n/a');
  const sections: string[] = [];
  sections.push(
    `# Benchmark results (${r.meta.mode} run)`,
    '',
    `${r.meta.date}, Node ${r.meta.node}, ${r.meta.cpus}, load average ${r.meta.loadAverage.start.join(' / ')} at start, ` +
      `${r.meta.loadAverage.end.join(' / ')} at end; ${r.meta.durationSeconds} s. ${r.meta.config.iterations} timed ` +
      `sequential calls per scenario after ${r.meta.config.warmup} warm-up, interleaved in rounds of ${r.meta.config.batch}. ` +
      'Medians, p99 in brackets. Client and server share one process on 127.0.0.1.',
    ...(r.meta.skipped.length > 0 ? ['', `**Skipped:** ${r.meta.skipped.join('; ')}.`] : []),
    '',
    '## 1. Latency per call',
    '',
    table(
      ['database', 'transport', 'bare (no idempotency)', 'first execution', 'replay', 'cached replay'],
      r.overhead.map((o) => [
        o.database,
        o.transport,
        ...SCENARIOS.map((scenario) => cell(lat(o.database, o.transport, scenario))),
      ]),
    ),
    '',
    '### Overhead and distance to the floor',
    '',
    'Overhead = idempotent median − bare median. Floor = the same database work done by hand through the driver ' +
      '(better-sqlite3 / pg, prepared statements): an INSERT and an UPDATE of a record-shaped row for a first ' +
      'execution, one primary-key read for a replay, measured interleaved with the calls above.',
    '',
    table(
      [
        'database',
        'transport',
        'first-execution overhead',
        'floor: INSERT + UPDATE',
        '**overhead / floor**',
        'replay overhead',
        'floor: 1 read',
        'replay / read',
        'cached-replay overhead',
      ],
      r.overhead.map((o) => [
        o.database,
        o.transport,
        us(o.firstOverheadUs),
        us(o.floorWriteUs),
        `**${x(o.overheadToFloor)}**`,
        us(o.replayOverheadUs),
        us(o.floorReadUs),
        x(o.replayOverheadToRead),
        us(o.cachedReplayOverheadUs),
      ]),
    ),
    '',
    '## 2. Store round trips per call (counted)',
    '',
    "Store operations counted by a wrapper around the store; SQL statements counted from Prisma's query log on a " +
      'separate client (for the peer: Redis commands).',
    '',
    table(
      ['backend', 'call', 'store operations', 'SQL statements / commands'],
      r.roundTrips.map((row) => [
        row.backend,
        row.call,
        row.storeOperations,
        row.statements === null ? 'n/a' : String(row.statements),
      ]),
    ),
    '',
    `## 3. Throughput, ${r.meta.config.concurrency} concurrent clients, distinct keys`,
    '',
    table(
      ['database', 'transport', 'mode', 'calls', 'wall time', 'calls/s', 'idempotent / bare'],
      r.throughput.map((row) => {
        const bare = r.throughput.find(
          (b) => b.transport === row.transport && b.database === row.database && b.mode === 'bare',
        );
        return [
          row.database,
          row.transport,
          row.mode,
          String(row.calls),
          `${(row.wallMs / 1000).toFixed(2)} s`,
          row.callsPerSecond.toFixed(0),
          row.mode === 'bare' || !bare ? '' : x(row.callsPerSecond / bare.callsPerSecond),
        ];
      }),
    ),
    '',
    '## 4. Peer: `@node-idempotency/core` at the service level (no transport)',
    '',
    'The peer ships storage adapters for memory and Redis only (no PostgreSQL or SQL adapter), so the database ' +
      'pairings below compare **our Prisma store against its Redis adapter: different backends**. Memory vs memory ' +
      'compares the libraries alone. "Own floor" divides each library\'s first-execution overhead by the raw cost of ' +
      'the writes its own backend needs (INSERT + UPDATE through the driver for us, SET NX + SET for the peer).',
    '',
    table(
      [
        'pairing',
        'first: ours',
        'first: peer',
        '**ours / peer**',
        'replay: ours',
        'replay: peer',
        'ours / peer',
        'ours / own floor',
        'peer / own floor',
      ],
      r.peer.ratios.map((row) => [
        row.pairing,
        us(row.oursFirstOverheadUs),
        us(row.peerFirstOverheadUs),
        `**${x(row.firstRatio)}**`,
        us(row.oursReplayOverheadUs),
        us(row.peerReplayOverheadUs),
        x(row.replayRatio),
        x(row.oursFirstToOwnFloor),
        x(row.peerFirstToOwnFloor),
      ]),
    ),
    '',
    '<details><summary>All service-level medians</summary>',
    '',
    table(
      ['scenario', 'median', 'p99'],
      r.peer.latency.map((row) => [row.id, us(row.medianUs), us(row.p99Us)]),
    ),
    '',
    '</details>',
    '',
    `### Duplicate storm: ${r.meta.config.stormKeys} keys x ${r.meta.config.stormDuplicates} concurrent duplicates`,
    '',
    table(
      ['library', 'backend', 'keys run exactly once', 'executed', 'replayed', 'refused in progress', 'wall time'],
      r.peer.storm.map((row) => [
        row.library,
        row.backend,
        `${row.keysRunExactlyOnce} / ${row.keys}`,
        String(row.executed),
        String(row.replayed),
        String(row.inProgress),
        `${row.wallMs.toFixed(1)} ms`,
      ]),
    ),
    '',
    '## 5. Where the time goes (service level: a first execution, a replay, a duplicate of a running call)',
    '',
    '"Adds" is the step\'s median minus the step above it (for the first duplicate row: minus the replay floor, ' +
      'one primary-key read), all measured interleaved.',
    '',
    table(
      ['database', 'step', 'median', 'p99', 'adds'],
      r.breakdown.map((row) => [
        row.database,
        row.step,
        us(row.medianUs),
        us(row.p99Us),
        row.addsUs === null ? '' : us(row.addsUs),
      ]),
    ),
    '',
    'Chart: [latency.svg](latency.svg).',
    '',
  );
  return sections.join('\n');
}

function renderChart(r: Results): string {
  const colors: Record<TransportScenario, string> = {
    bare: '#9aa5b1',
    first: '#d9822b',
    replay: '#2b8a3e',
    'cached replay': '#5c940d',
  };
  const groups: ChartGroup[] = [];
  for (const database of DATABASES) {
    for (const transport of ['trpc', 'grpc'] as const) {
      const bars = SCENARIOS.flatMap((scenario) => {
        const row = r.latency.find(
          (l) => l.database === database && l.transport === transport && l.scenario === scenario,
        );
        return row ? [{ label: scenario, medianUs: row.medianUs, p99Us: row.p99Us, color: colors[scenario] }] : [];
      });
      if (bars.length > 0)
        groups.push({ title: `${transport === 'trpc' ? 'tRPC over HTTP' : 'gRPC unary'} · ${database}`, bars });
    }
    const floorBars = r.floors
      .filter((f) => f.database === database)
      .map((f) => ({ label: `floor: ${f.operation}`, medianUs: f.medianUs, p99Us: f.p99Us, color: '#1971c2' }));
    if (floorBars.length > 0) groups.push({ title: `raw driver floor · ${database}`, bars: floorBars });
  }
  return barChart(
    'rpc-idempotency: median latency per call (tick: p99)',
    `${r.meta.date.slice(0, 10)} · Node ${r.meta.node} · ${r.meta.cpus} · ${r.meta.config.iterations} calls per bar · client and server in one process · tick at the right edge: p99 off scale`,
    groups,
  );
}

await main();
