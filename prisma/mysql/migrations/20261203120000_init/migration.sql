-- CreateTable
CREATE TABLE `idempotency_records` (
    `scope` VARCHAR(255) COLLATE utf8mb4_nopad_bin NOT NULL,
    `key` VARCHAR(255) COLLATE utf8mb4_nopad_bin NOT NULL,
    `fingerprint` VARCHAR(255) NOT NULL,
    `procedure` VARCHAR(255) NOT NULL,
    `status` VARCHAR(16) NOT NULL,
    `owner_token` VARCHAR(255) COLLATE utf8mb4_nopad_bin NOT NULL,
    `locked_until` DATETIME(3) NOT NULL,
    `result` LONGBLOB NULL,
    `result_code` VARCHAR(255) NULL,
    `codec` VARCHAR(255) NULL,
    `created_at` DATETIME(3) NOT NULL,
    `expires_at` DATETIME(3) NOT NULL,

    INDEX `idempotency_records_expires_at_idx`(`expires_at`),
    PRIMARY KEY (`scope`, `key`)
) DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
