#!/bin/sh
# Stand-in for Prisma's schema-engine binary, for machines that cannot download it.
#
# `prisma generate` and `prisma validate` insist that the schema-engine binary exists although they never run
# it; offline, the CLI's download fails and the command aborts. `prisma.config.ts` and scripts/generate.mjs
# point PRISMA_SCHEMA_ENGINE_BINARY here (only when it is unset and no real engine is installed) so that those
# commands finish. Commands that really need the engine (`migrate deploy`, `migrate diff`, `db push`,
# `db pull`) end up here and fail with this explanation.
cat >&2 <<'MSG'
rpc-idempotency: this is a stub, not Prisma's schema engine.

The real schema-engine binary could not be downloaded on this machine, so PRISMA_SCHEMA_ENGINE_BINARY points
at scripts/schema-engine-stub.sh, which only lets `prisma generate` finish offline.

To run migrations without the engine, call applyIdempotencyMigrations() from 'rpc-idempotency/prisma'.
To use `prisma migrate` instead, install the engine (run the Prisma CLI once with network access) or set
PRISMA_SCHEMA_ENGINE_BINARY to the path of a real schema-engine binary.
MSG
exit 1
