-- The customers service's private credentials: one account per email (lower-cased).
-- Written by the append hook in the same transaction as CustomerRegistered, so a taken
-- email aborts the registration (409). The password exists only as an Argon2id PHC hash,
-- here and nowhere else (never in events or logs).
CREATE TABLE IF NOT EXISTS customer_credentials (
    email         TEXT PRIMARY KEY,
    customer_id   UUID NOT NULL UNIQUE,
    password_hash TEXT NOT NULL CHECK (password_hash LIKE '$argon2id$%')
);
