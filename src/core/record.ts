/**
 * The lifecycle states of an idempotency record.
 *
 * - `IN_PROGRESS`: a caller holds the lease and is running the procedure.
 * - `SUCCEEDED`: the procedure finished; `result` holds its serialized value.
 * - `FAILED`: the procedure ended with a final error (or its result could not be stored); retries replay it.
 *
 * @example
 * ```ts
 * if (record.status === IdempotencyStatus.SUCCEEDED) replay(record.result);
 * ```
 */
export const IdempotencyStatus = {
  IN_PROGRESS: 'IN_PROGRESS',
  SUCCEEDED: 'SUCCEEDED',
  FAILED: 'FAILED',
} as const;

/** One of the values of {@link IdempotencyStatus}. */
export type IdempotencyStatus = (typeof IdempotencyStatus)[keyof typeof IdempotencyStatus];

/** A status that ends the lifecycle: the record is replayed from now on. */
export type IdempotencyFinalStatus = Exclude<IdempotencyStatus, 'IN_PROGRESS'>;

/**
 * One stored idempotency record, as every store returns it. All times are epoch milliseconds.
 *
 * Records are unique per `(scope, key)`.
 *
 * @example
 * ```ts
 * const record = await store.get('tenant-1', 'order-42');
 * if (record && record.expiresAt > Date.now()) console.log(record.status);
 * ```
 */
export interface IdempotencyRecord {
  /** Who owns the key (tenant, user, API client). `''` is the global key space. */
  readonly scope: string;
  /** The client's idempotency key: 1..255 printable ASCII characters. */
  readonly key: string;
  /** SHA-256 (hex) over the procedure's identity and its canonical input. */
  readonly fingerprint: string;
  /** The procedure's identity: tRPC path or gRPC method path. */
  readonly procedure: string;
  /** Where the record is in its lifecycle. */
  readonly status: IdempotencyStatus;
  /** The lease owner's token: completion, release and renewal must present it (fencing). */
  readonly ownerToken: string;
  /** While `IN_PROGRESS`, the lease is live until this instant (epoch ms). */
  readonly lockedUntil: number;
  /** The serialized result (`SUCCEEDED`) or serialized error (`FAILED`); `null` while `IN_PROGRESS`. */
  readonly result: Uint8Array | null;
  /** For `FAILED` records, the stored error's code (`RESULT_NOT_STORABLE` or the adapter's code). */
  readonly resultCode: string | null;
  /** The name of the codec that wrote `result`, so a replay decodes it the same way. */
  readonly codec: string | null;
  /** When the record was created or taken over (epoch ms). */
  readonly createdAt: number;
  /** When the record stops counting (epoch ms); an expired record behaves as absent. */
  readonly expiresAt: number;
}

/** Maximum length of an idempotency key, in characters. */
export const MAX_KEY_LENGTH = 255;

/**
 * Whether a record counts as absent at `now`: expired by TTL.
 *
 * @example
 * ```ts
 * if (isRecordExpired(record, clock.now())) treatAsAbsent();
 * ```
 */
export function isRecordExpired(record: Pick<IdempotencyRecord, 'expiresAt'>, now: number): boolean {
  return record.expiresAt <= now;
}

/**
 * Whether a claim may take the record over at `now`: it expired, or it is `IN_PROGRESS` and its lease lapsed
 * (the owner crashed or hung). Every store's claim must apply exactly this rule, atomically.
 *
 * @example
 * ```ts
 * if (isRecordClaimable(existing, now)) takeOver(existing);
 * ```
 */
export function isRecordClaimable(
  record: Pick<IdempotencyRecord, 'expiresAt' | 'status' | 'lockedUntil'>,
  now: number,
): boolean {
  return isRecordExpired(record, now) || (record.status === IdempotencyStatus.IN_PROGRESS && record.lockedUntil <= now);
}
