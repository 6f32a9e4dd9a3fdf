// Bad input: a bounded, seeded fuzz run of hostile keys, headers, metadata and bodies against the real tRPC
// HTTP server (raw bytes over a TCP socket, so anything can be sent: control characters, non-ASCII bytes,
// duplicate headers, 10 KB keys, malformed batch headers, invalid JSON, oversized bodies) and the real gRPC
// server (grpc-js with raw message bytes, and raw HTTP/2 for bytes grpc-js refuses to send).
//
// Invariants: every request gets a clear answer (a 4xx, or a gRPC status that names the problem) within its
// timeout; no 5xx except the documented RESULT_NOT_STORABLE replay; both servers stay up; and no record is
// stored for a request the idempotency layer or the transport rejected: every record in the table belongs to
// a key whose request reached the procedure (it answered, or it stored its final validation error, as the
// README says final errors are).
import { randomUUID } from 'node:crypto';
import http2 from 'node:http2';
import { connect } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { PaymentsClient } from '../grpc/payments.js';
import { PaymentsService } from '../grpc/payments.js';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '../support/databases.js';
import {
  CALL_TIMEOUT_MS,
  createLedger,
  grpcClient,
  prng,
  records,
  type ServerProcess,
  spawnServer,
} from './support.js';

const SEED = Number(process.env.RELIABILITY_FUZZ_SEED ?? 20_261_203);
const HTTP_CASES = 400;
const GRPC_CASES = 300;
const MAX_RESULT_BYTES = 4_096;

// ───────────── raw HTTP/1.1 ─────────────

interface RawAnswer {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Send `request` as is on a fresh connection and read the whole answer (the request says Connection: close). */
function rawHttp(port: number, request: Buffer): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (error?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const received = Buffer.concat(chunks);
      const parsed = received.length > 0 ? parseHttp(received) : undefined;
      if (parsed) resolve(parsed);
      else reject(error ?? new Error('the connection closed without an answer'));
    };
    const timer = setTimeout(
      () => finish(new Error(`no answer within ${CALL_TIMEOUT_MS} ms (a hang)`)),
      CALL_TIMEOUT_MS,
    );
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => finish());
    socket.on('close', () => finish());
    // A server may answer (413, 400) and close before reading a large body: the write then fails, the answer
    // is still in `chunks`.
    socket.on('error', (error) => finish(error));
    socket.write(request);
  });
}

function parseHttp(raw: Buffer): RawAnswer | undefined {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine, ...headerLines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(statusLine?.split(' ')[1]);
  if (!Number.isInteger(status)) return undefined;
  const headers = new Map<string, string>();
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  let body = raw.subarray(end + 4);
  if (headers.get('transfer-encoding') === 'chunked') {
    const parts: Buffer[] = [];
    let offset = 0;
    for (;;) {
      const lineEnd = body.indexOf('\r\n', offset);
      if (lineEnd < 0) break;
      const size = Number.parseInt(body.subarray(offset, lineEnd).toString('latin1'), 16);
      if (!(size > 0)) break;
      parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
      offset = lineEnd + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  }
  return { status, headers, body: body.toString('utf8') };
}

/** Build one HTTP/1.1 request from raw parts; header values are bytes, sent untouched. */
function httpRequest(
  method: string,
  path: string,
  headers: [string, Buffer | string][],
  body: Buffer | string,
): Buffer {
  const payload = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const head: Buffer[] = [
    Buffer.from(`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n`, 'latin1'),
  ];
  for (const [name, value] of headers) {
    head.push(
      Buffer.from(`${name}: `, 'latin1'),
      Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8'),
      Buffer.from('\r\n'),
    );
  }
  if (method !== 'GET') head.push(Buffer.from(`Content-Length: ${payload.length}\r\n`, 'latin1'));
  head.push(Buffer.from('\r\n'));
  return Buffer.concat([...head, payload]);
}

// ───────────── hostile values ─────────────

type Random = () => number;
const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;

/** A key as raw bytes, and the string the server will see if it accepts the header at all. */
function hostileKey(random: Random, used: string[]): Buffer {
  const n = Math.floor(random() * 1e9).toString(36);
  const choices: (() => Buffer | string)[] = [
    () => `fz-${n}-${randomUUID()}`, // valid
    () => `fz-${n}-${randomUUID()}`, // valid (twice as likely)
    () => (used.length > 0 ? pick(random, used) : `fz-${n}`), // a key used before: replay, mismatch or conflict
    () => '',
    () => '   ',
    () => `x${'a'.repeat(254)}`, // 255: the longest valid key
    () => 'a'.repeat(256),
    () => 'k'.repeat(10_240),
    () => `ключ-${n}-✓`, // UTF-8 bytes
    () => `k\x01${n}`,
    () => `k\x7f${n}`,
    () => `k\t${n}`,
    () => `k\x00${n}`,
    () => Buffer.from([0x6b, 0x80 + Math.floor(random() * 127), 0xff, 0x41]), // raw non-ASCII bytes
    () => `"${n}"`, // printable, quoted: valid
    () => `a, b-${n}`, // looks like two keys joined: printable, valid
    () => `%00%ff-${n}`,
    () => `k${n}\r\nX-Injected: 1`, // CRLF: becomes a second header line
  ];
  const value = pick(random, choices)();
  return Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8');
}

function hostileBody(random: Random): { body: Buffer | string; expectStored: boolean } {
  const amount = 1 + Math.floor(random() * 1_000);
  const choices: (() => { body: Buffer | string; expectStored: boolean })[] = [
    () => ({ body: JSON.stringify({ amount }), expectStored: true }),
    () => ({ body: JSON.stringify({ amount, resultBytes: MAX_RESULT_BYTES + 1_000 }), expectStored: true }),
    () => ({ body: JSON.stringify({ amount, effect: false, note: 'ünïcode ✓ \u202e' }), expectStored: true }),
    () => ({ body: JSON.stringify({ amount: -amount }), expectStored: true }),
    () => ({ body: JSON.stringify({ amount: 'lots' }), expectStored: true }),
    () => ({ body: '{"amount": 1e400}', expectStored: true }),
    () => ({ body: '{"amount": "\\ud800"}', expectStored: true }),
    () => ({ body: '{"amount":', expectStored: false }),
    () => ({ body: '', expectStored: false }),
    () => ({ body: 'null', expectStored: true }),
    () => ({ body: '[1,2,3]', expectStored: true }),
    () => ({ body: `${'['.repeat(5_000)}${']'.repeat(5_000)}`, expectStored: true }),
    () => ({ body: Buffer.from([0xff, 0xfe, 0x00, 0x7b]), expectStored: false }),
    () => ({ body: JSON.stringify({ amount, pad: 'x'.repeat(1_200_000) }), expectStored: false }), // past maxBodySize
  ];
  return pick(random, choices)();
}

describeWithDatabase('postgresql', 'bad input (seeded fuzz)', () => {
  let db: TestDatabase<'postgresql'>;
  let trpcServer: ServerProcess;
  let grpcServer: ServerProcess;
  let client: PaymentsClient;

  beforeAll(async () => {
    db = await createTestDatabase('postgresql');
    await createLedger(db.prisma);
    const run = randomUUID().slice(0, 8);
    const common = { namespace: db.namespace, maxResultBytes: MAX_RESULT_BYTES };
    [trpcServer, grpcServer] = await Promise.all([
      spawnServer({
        ...common,
        transport: 'trpc',
        storeApplicationName: `rel-fz-t-${run}`,
        ledgerApplicationName: `rel-fz-tl-${run}`,
      }),
      spawnServer({
        ...common,
        transport: 'grpc',
        storeApplicationName: `rel-fz-g-${run}`,
        ledgerApplicationName: `rel-fz-gl-${run}`,
      }),
    ]);
    client = grpcClient(grpcServer.port);
  });

  afterAll(async () => {
    client?.close();
    await Promise.all([trpcServer?.stop(), grpcServer?.stop()]);
    await db?.drop();
  });

  it(`answers ${HTTP_CASES} hostile tRPC requests with clear 4xx, stays up, and stores nothing it rejected`, async () => {
    const random = prng(SEED);
    const before = new Set((await records(db.prisma)).map((record) => record.key));
    const used: string[] = [];
    /** Keys (as the server saw them) whose request reached the procedure: the only keys allowed a record. */
    const reached = new Set<string>();
    const unclear: unknown[] = [];
    const statuses = new Map<number, number>();

    for (let index = 0; index < HTTP_CASES; index++) {
      const shape = random();
      let request: Buffer;
      let keys: (string | null)[] = [];
      let batch = false;
      let repeated = false;
      if (shape < 0.6) {
        // One call; sometimes the key header twice, sometimes a batch keys header on it.
        const key = hostileKey(random, used);
        const headers: [string, Buffer | string][] = [
          ['Content-Type', pick(random, ['application/json', 'text/plain', 'application/x-www-form-urlencoded'])],
        ];
        headers.push(['Idempotency-Key', key]);
        const extra = random();
        repeated = extra < 0.2;
        if (extra < 0.1) headers.push(['Idempotency-Key', key]);
        else if (extra < 0.2) headers.push(['Idempotency-Key', hostileKey(random, used)]);
        else if (extra < 0.25) headers.push(['Idempotency-Keys', `["${key.toString('latin1')}"]`]);
        // What the server sees: the bytes up to a CR LF (which starts another header line), without the
        // surrounding spaces and tabs.
        keys = [key.toString('latin1').split('\r\n')[0] as string];
        request = httpRequest('POST', '/charge', headers, hostileBody(random).body);
      } else if (shape < 0.8) {
        // A batch of two with a hostile Idempotency-Keys header.
        batch = true;
        const a = `fz-b-${randomUUID()}`;
        const b = `fz-b-${randomUUID()}`;
        const header = pick(random, [
          JSON.stringify([a, b]),
          JSON.stringify([a, null]),
          JSON.stringify([a]),
          JSON.stringify([a, a]),
          JSON.stringify({ 0: a, 1: b }),
          JSON.stringify([a, 7]),
          `[${'"k",'.repeat(2_000)}"k"]`,
          '["unterminated',
          JSON.stringify(['ключ', b]),
          '',
        ]);
        keys = header.startsWith('[') || header.startsWith('{') ? [a, b] : [];
        request = httpRequest(
          'POST',
          '/charge,charge?batch=1',
          [
            ['Content-Type', 'application/json'],
            ['Idempotency-Keys', header],
          ],
          JSON.stringify({ 0: { amount: 1 }, 1: pick(random, [{ amount: 2 }, 'x', null]) }),
        );
      } else {
        // Wrong methods and paths, with a valid key.
        const key = `fz-m-${randomUUID()}`;
        keys = [key];
        const [method, path] = pick(random, [
          ['GET', `/charge?input=${encodeURIComponent(JSON.stringify({ amount: 1 }))}`],
          ['PUT', '/charge'],
          ['DELETE', '/charge'],
          ['POST', '/nope'],
          ['POST', '/charge/../health'],
          ['POST', `/${'a'.repeat(8_000)}`],
          ['POST', '/%00'],
          ['GET', '/health'],
        ] as const);
        request = httpRequest(
          method,
          path,
          [
            ['Idempotency-Key', key],
            ['Content-Type', 'application/json'],
          ],
          '{"amount":1}',
        );
      }

      let answer: RawAnswer;
      try {
        answer = await rawHttp(trpcServer.port, request);
      } catch (error) {
        unclear.push({ index, error: (error as Error).message, request: request.subarray(0, 300).toString('latin1') });
        continue;
      }
      statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
      let parsed: unknown;
      try {
        parsed = JSON.parse(answer.body);
      } catch {
        parsed = undefined;
      }
      const entries = (Array.isArray(parsed) ? parsed : [parsed]) as {
        result?: unknown;
        error?: { data?: { code?: string; idempotency?: { code?: string } } };
      }[];
      const idempotencyCodes = entries.map((entry) => entry?.error?.data?.idempotency?.code);
      const clear =
        (answer.status >= 200 && answer.status < 300) ||
        (answer.status >= 400 && answer.status < 500) ||
        // Documented: a replay of a result that could not be stored. (A batch answers 207 or the worst status.)
        (answer.status === 500 && idempotencyCodes.includes('RESULT_NOT_STORABLE'));
      if (!clear) unclear.push({ index, status: answer.status, body: answer.body.slice(0, 300) });
      // Which keys reached the procedure: the call has a result, or the procedure's own final error (no
      // idempotency code), or a replay of a stored outcome. The server trims spaces and tabs around header values.
      entries.forEach((entry, position) => {
        const sent = batch ? keys[position] : keys[0];
        if (sent == null || entry === undefined || entry === null) return;
        const code = entry.error?.data?.idempotency?.code;
        const procedureAnswered =
          entry.result !== undefined ||
          (entry.error !== undefined && code === undefined && entry.error.data?.code === 'BAD_REQUEST') ||
          code === 'RESULT_NOT_STORABLE';
        // A repeated Idempotency-Key header is ambiguous: refused with a 4xx before anything runs.
        if (repeated && (answer.status < 400 || answer.status >= 500 || procedureAnswered)) {
          unclear.push({ index, repeatedKeyHeader: true, status: answer.status, body: answer.body.slice(0, 200) });
        }
        if (procedureAnswered) {
          reached.add(sent.replace(/^[ \t]+|[ \t]+$/g, ''));
          if (!batch && /^[\x20-\x7e]+$/.test(sent)) used.push(sent);
        }
      });
    }

    // Assess: clear answers only, the server still up and serving, records only for requests that ran.
    expect(unclear).toEqual([]);
    const health = await fetch(`http://127.0.0.1:${trpcServer.port}/health`, {
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
    });
    expect(health.status).toBe(200);
    expect(trpcServer.lines.filter((line) => line.type === 'ready')).toHaveLength(1);
    const stored = (await records(db.prisma)).filter((record) => !before.has(record.key));
    expect(stored.filter((record) => record.status === 'IN_PROGRESS')).toEqual([]);
    expect(stored.map((record) => record.key).filter((key) => !reached.has(key))).toEqual([]);
    expect(reached.size).toBeGreaterThan(0);
    console.info(
      `[reliability] tRPC fuzz (seed ${SEED}): ${HTTP_CASES} requests, statuses ${JSON.stringify(Object.fromEntries(statuses))}, ${stored.length} records, all from requests that ran`,
    );
  });

  it(`answers ${GRPC_CASES} hostile gRPC calls with a clear status, stays up, and stores nothing it rejected`, async () => {
    const random = prng(SEED + 1);
    const before = new Set((await records(db.prisma)).map((record) => record.key));
    const reached = new Set<string>();
    const unclear: unknown[] = [];
    const codes = new Map<string, number>();
    const used: string[] = [];
    const createPayment = PaymentsService.CreatePayment as grpc.MethodDefinition<object, unknown>;
    const serialize = (message: object) => createPayment.requestSerialize(message);
    const valid = () => serialize({ amount: String(1 + Math.floor(random() * 1_000)), currency: 'EUR' });

    const viaGrpcJs = (metadata: grpc.Metadata, payload: Buffer) =>
      new Promise<{ code: number; details: string; trailers: grpc.Metadata }>((resolve) => {
        const call = client.makeUnaryRequest(
          '/payments.v1.Payments/CreatePayment',
          (buffer: Buffer) => buffer,
          (buffer: Buffer) => buffer,
          payload,
          metadata,
          { deadline: Date.now() + CALL_TIMEOUT_MS },
          () => undefined,
        );
        call.on('status', (status: grpc.StatusObject) =>
          resolve({ code: status.code, details: status.details, trailers: status.metadata }),
        );
      });

    // Raw HTTP/2, for key bytes grpc-js refuses to put in metadata (tabs, bytes 0x80-0xff).
    const session = http2.connect(`http://127.0.0.1:${grpcServer.port}`);
    session.on('error', () => undefined);
    const viaHttp2 = (key: string, payload: Buffer) =>
      new Promise<{ code: number; details: string; trailers: grpc.Metadata }>((resolve, reject) => {
        const frame = Buffer.alloc(5 + payload.length);
        frame.writeUInt32BE(payload.length, 1);
        payload.copy(frame, 5);
        const stream = session.request({
          ':method': 'POST',
          ':path': '/payments.v1.Payments/CreatePayment',
          'content-type': 'application/grpc',
          te: 'trailers',
          'idempotency-key': key,
        });
        const timer = setTimeout(() => {
          stream.close();
          reject(new Error(`no gRPC status within ${CALL_TIMEOUT_MS} ms (a hang)`));
        }, CALL_TIMEOUT_MS);
        let headers: http2.IncomingHttpHeaders = {};
        stream.on('response', (received) => {
          headers = received;
        });
        stream.on('trailers', (trailers) => {
          clearTimeout(timer);
          const metadata = new grpc.Metadata();
          const error = trailers['idempotency-error'] ?? headers['idempotency-error'];
          if (typeof error === 'string') metadata.set('idempotency-error', error);
          resolve({
            code: Number(trailers['grpc-status']),
            details: String(trailers['grpc-message'] ?? ''),
            trailers: metadata,
          });
        });
        stream.on('close', () => {
          // Trailers-only answers arrive as headers: the status is in them.
          if (headers['grpc-status'] !== undefined) {
            clearTimeout(timer);
            const metadata = new grpc.Metadata();
            if (typeof headers['idempotency-error'] === 'string')
              metadata.set('idempotency-error', headers['idempotency-error']);
            resolve({
              code: Number(headers['grpc-status']),
              details: String(headers['grpc-message'] ?? ''),
              trailers: metadata,
            });
          }
        });
        stream.on('error', (error) => {
          clearTimeout(timer);
          reject(error);
        });
        stream.end(frame);
      });

    for (let index = 0; index < GRPC_CASES; index++) {
      const n = Math.floor(random() * 1e9).toString(36);
      const metadata = new grpc.Metadata();
      let key: string | undefined = pick(random, [
        `fg-${n}-${randomUUID()}`,
        `fg-${n}-${randomUUID()}`,
        used.length > 0 ? pick(random, used) : `fg-${n}`,
        '',
        ' ',
        `x${'a'.repeat(254)}`,
        'a'.repeat(256),
        'k'.repeat(10_240),
        `"${n}"`,
        undefined,
      ]);
      const extra = random();
      /** Every key value the call carries: a transport may drop an empty one, and the server sees the other. */
      const candidates = key === undefined ? [] : [key];
      if (key !== undefined) metadata.add('idempotency-key', key);
      if (extra < 0.1 && key !== undefined) {
        metadata.add('idempotency-key', `fg-other-${n}`); // two values
        candidates.push(`fg-other-${n}`);
      } else if (extra < 0.2) metadata.add('idempotency-key-bin', Buffer.from([0, 1, 2, 0xff]));
      const payload = pick(random, [
        valid,
        valid,
        () => serialize({ amount: '0', currency: 'EUR' }),
        () => serialize({ amount: '-5', currency: 'EUR' }),
        () => serialize({ amount: '18446744073709551615', currency: 'ключ' }),
        () => serialize({ amount: '7', currency: 'EUR', metadata: { resultBytes: String(MAX_RESULT_BYTES + 1_000) } }),
        () => Buffer.from(Array.from({ length: 1 + Math.floor(random() * 64) }, () => Math.floor(random() * 256))),
        () => valid().subarray(0, 2),
        () => Buffer.concat([valid(), Buffer.from([0xff, 0xff, 0xff])]),
        () => Buffer.alloc(0),
        () => Buffer.alloc(5 * 1024 * 1024, 1), // past grpc-js's 4 MiB default receive limit
      ])();
      let answer: { code: number; details: string; trailers: grpc.Metadata };
      try {
        if (random() < 0.15) {
          key = pick(random, [`k\t${n}`, `k${String.fromCharCode(0x80 + Math.floor(random() * 127))}${n}`, `ÿA${n}`]);
          candidates.splice(0, candidates.length, key);
          answer = await viaHttp2(key, payload);
        } else {
          answer = await viaGrpcJs(metadata, payload);
        }
      } catch (error) {
        unclear.push({ index, key, error: (error as Error).message });
        continue;
      }
      const name = grpc.status[answer.code] ?? String(answer.code);
      codes.set(name, (codes.get(name) ?? 0) + 1);
      const reason = answer.trailers.get('idempotency-error')[0];
      const clear =
        [
          grpc.status.OK,
          grpc.status.INVALID_ARGUMENT,
          grpc.status.FAILED_PRECONDITION,
          grpc.status.RESOURCE_EXHAUSTED,
        ].includes(answer.code) ||
        // In progress elsewhere (a reused key): ABORTED with the idempotency reason.
        (answer.code === grpc.status.ABORTED && reason === 'IN_PROGRESS') ||
        // grpc-js's own answer to a request message it cannot decode: INTERNAL, saying so.
        (answer.code === grpc.status.INTERNAL && /deserializ|parse/i.test(answer.details)) ||
        // Documented: a replay of a result that could not be stored.
        (answer.code === grpc.status.INTERNAL && reason === 'RESULT_NOT_STORABLE');
      if (!clear) unclear.push({ index, key: key?.slice(0, 40), code: name, details: answer.details, reason });
      const reachedProcedure =
        answer.code === grpc.status.OK ||
        (answer.code === grpc.status.INVALID_ARGUMENT && reason === undefined) ||
        reason === 'RESULT_NOT_STORABLE';
      if (reachedProcedure) {
        for (const candidate of candidates) {
          reached.add(candidate);
          if (/^[\x20-\x7e]+$/.test(candidate)) used.push(candidate);
        }
      }
    }
    session.close();

    // Assess
    expect(unclear).toEqual([]);
    const probe = client.listRefunds({ paymentId: 'p', limit: 1 }, new grpc.Metadata());
    const probed = await new Promise<number>((resolve) =>
      probe.on('status', (status: grpc.StatusObject) => resolve(status.code)).resume(),
    );
    expect(probed).toBe(grpc.status.OK);
    expect(grpcServer.lines.filter((line) => line.type === 'ready')).toHaveLength(1);
    const stored = (await records(db.prisma)).filter((record) => !before.has(record.key));
    expect(stored.filter((record) => record.status === 'IN_PROGRESS')).toEqual([]);
    expect(stored.map((record) => record.key).filter((key) => !reached.has(key))).toEqual([]);
    expect(reached.size).toBeGreaterThan(0);
    console.info(
      `[reliability] gRPC fuzz (seed ${SEED + 1}): ${GRPC_CASES} calls, statuses ${JSON.stringify(Object.fromEntries(codes))}, ${stored.length} records, all from calls that ran`,
    );
  });
});
